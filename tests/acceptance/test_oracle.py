"""AC-KERN-005: the transformers oracle (acceptance/oracle.py) and its mutants
(falsifiers/mutants/kernels_oracle.py), judged against the thresholds of
contracts/kernels.yaml. Needs the oracle extra; without it only the SKIP is tested."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from acceptance import oracle
from falsifiers.mutants import kernels_oracle as M
from harness.context import CheckContext
from harness.errors import SkipCheck
from harness.judge import judge_observations
from harness.loader import load_contract
from harness.model import InvariantOutcome

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = load_contract(ROOT / "contracts" / "kernels.yaml")
INVARIANTS = {i.id: i for i in CONTRACT.invariants}
CHECKS = ("INV-KERN-005", "INV-KERN-006", "INV-KERN-007")
MUTANTS = [
    f.id for f in CONTRACT.falsifiers if f.target in CHECKS and f.kind == "mutant"
]  # fmt: skip
FALSIFIERS = {f.id: f for f in CONTRACT.falsifiers}

HAVE_ORACLE = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
needs_oracle = pytest.mark.skipif(not HAVE_ORACLE, reason=oracle.ORACLE_MISSING)


@pytest.fixture(autouse=True)
def _hf_environment(tmp_path, monkeypatch):
    """What oracle_modules sets for its own process, restored after each test."""
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("HF_HOME", str(tmp_path / "hf-home")),
    ):
        monkeypatch.setenv(name, value)


def _run(inv_id: str, tmp_path: Path, seed: int = 7):
    inv = INVARIANTS[inv_id]
    module, name = inv.check.target.split(":")
    check = getattr(importlib.import_module(module), name)
    ctx = CheckContext(dict(inv.check.params), seed, tmp_path / "s", tmp_path / "a", inv_id)
    obs = check(ctx)
    outcome, _, message = judge_observations(inv.expect, obs)
    return obs, outcome, message


def test_without_the_extra_the_checks_skip_with_the_install_hint(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "transformers" else real(n, *a)
    )
    for inv_id in CHECKS:
        with pytest.raises(SkipCheck, match=r"pip install -e '\.\[oracle\]'"):
            _run(inv_id, tmp_path)


def test_every_oracle_invariant_has_a_mutant():
    assert {FALSIFIERS[m].target for m in MUTANTS} == set(CHECKS)
    assert len(MUTANTS) >= 7


@needs_oracle
def test_the_export_loads_into_transformers_without_a_mapping(tmp_path):
    from kernels.models.registry import build_model

    for family in ("gpt2", "llama"):
        cfg = oracle.model_config(family, {})
        model = build_model(cfg)
        params = oracle.checkpoint_params(model, 3, 0.1)
        path = oracle.export_checkpoint(tmp_path / family, cfg, params)
        config = json.loads((path.parent / "config.json").read_text())
        assert config["architectures"] == [oracle.HF_CLASSES[family]]
        torch, transformers = oracle.oracle_modules(
            CheckContext({}, 0, tmp_path / "s", tmp_path / "a", "X")
        )
        hf, info = oracle.load_hf(torch, transformers, path.parent, family, np.float32)
        assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        for name, a in params.items():  # every tensor of ours, by its own name and layout
            np.testing.assert_array_equal(hf.get_parameter(name).detach().numpy(), a)


@needs_oracle
@pytest.mark.parametrize("inv_id", CHECKS)
def test_the_core_matches_the_oracle_within_the_yaml_thresholds(inv_id, tmp_path):
    obs, outcome, message = _run(inv_id, tmp_path)
    assert outcome == InvariantOutcome.PASS, message
    if inv_id == "INV-KERN-007":
        assert obs["min_clip_ratio"] > 1.0  # clipping was active
    else:
        assert obs["tensors"] == {"INV-KERN-005": 28, "INV-KERN-006": 21}[inv_id]


@needs_oracle
@pytest.mark.parametrize("falsifier_id", MUTANTS)
def test_each_mutant_turns_its_check_red(falsifier_id, tmp_path, monkeypatch):
    import falsifiers.mutants.kernels  # noqa: F401  (captures the originals before patching)

    f = FALSIFIERS[falsifier_id]
    for target, replacement in f.spec["patch"].items():
        mod, attr = target.split(":")
        rmod, rattr = replacement.split(":")
        monkeypatch.setattr(
            importlib.import_module(mod), attr, getattr(importlib.import_module(rmod), rattr)
        )
    _, outcome, message = _run(f.target, tmp_path)
    assert outcome == InvariantOutcome.FAIL, (falsifier_id, message)


# ----------------------------------------------------------------------------- mutants


def test_the_mutants_are_consistent_bugs_not_crashes():
    """Each model mutant is a self-consistent variant: its backward is the derivative
    of its forward, and its inverse rotation undoes its rotation (so only an
    independent implementation can tell)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8))
    h = 1e-6
    pre, act = np.empty((5, 8)), np.empty((5, 8))
    eye = np.eye(8)
    M.linear_io_gelu_fwd_into_erf(x, eye, np.zeros(8), pre, act)
    plus, minus = np.empty_like(act), np.empty_like(act)
    M.linear_io_gelu_fwd_into_erf(x + h, eye, np.zeros(8), np.empty_like(pre), plus)
    M.linear_io_gelu_fwd_into_erf(x - h, eye, np.zeros(8), np.empty_like(pre), minus)
    dx = np.empty_like(x)
    M.gelu_bwd_erf(x, np.ones_like(x), dx)
    np.testing.assert_allclose(dx, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)

    from kernels.ops.rope import rope_tables

    cos, sin = rope_tables(8, 4, dtype=np.float64)
    q = rng.normal(size=(6, 3 * 8))
    r = q.copy()
    M.rope_interleaved(r, 3, 0, 4, 4, cos, sin, 1.0)
    assert not np.allclose(r[3:, :16], q[3:, :16])  # rotated (positions 1, 2)
    np.testing.assert_array_equal(r[:, 16:], q[:, 16:])  # v untouched
    M.rope_interleaved(r, 3, 0, 4, 4, cos, sin, -1.0)
    np.testing.assert_allclose(r, q, rtol=1e-12, atol=1e-12)


def test_clipping_after_the_step_leaves_the_gradients_clipped():
    from kernels.optim import AdamW

    p = {"w": np.ones((2, 2)), "b": np.zeros(2)}
    g = {"w": np.full((2, 2), 3.0), "b": np.full(2, 4.0)}
    opt = AdamW(clip_norm=1.0)
    state = opt.state
    opt._ensure_state(p)
    names = sorted(p)
    M.adamw_all_clipping_after_step(
        tuple(p[n].reshape(-1) for n in names), tuple(g[n].reshape(-1) for n in names),
        tuple(state["m." + n].reshape(-1) for n in names),
        tuple(state["v." + n].reshape(-1) for n in names),
        np.array([0.0, 0.1]), 3e-4, 0.9, 0.95, 1e-8, 0.1, 0.05, 0.1,
    )  # fmt: skip
    np.testing.assert_allclose(g["w"], 0.3)  # clipped, but after the update used it
    np.testing.assert_allclose(state["m.w"], 0.1 * 3.0)  # the unclipped gradient
