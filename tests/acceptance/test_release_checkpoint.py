"""INV-REL-012's shard-fill observations (read from the files on disk) and its mutants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from acceptance.release_checkpoint import (
    exact_limit,
    fill_problems,
    first_shard_bytes,
    shard_fill,
    sharded_checkpoint,
)
from falsifiers.mutants.release_checkpoint import plan_shards_closing_at_the_limit
from harness.context import CheckContext
from kernels import checkpoint as ck
from tests.core.helpers import full_stamps, micro_model

ROOT = Path(__file__).resolve().parents[2]


def _release() -> dict:
    return yaml.safe_load((ROOT / "contracts" / "release.yaml").read_text())


def _invariant(inv_id: str) -> dict:
    (inv,) = [i for i in _release()["invariants"] if i["id"] == inv_id]
    return inv


def plan_shards_overfilling(sizes, max_shard_bytes):
    """A planner that compares only the bytes already in the shard with the limit (the
    tensor being added is forgotten): a shard goes over the limit by up to a tensor."""
    shards, current, used = [], [], 0
    for name in sorted(sizes):
        if current and used > max_shard_bytes:  # the bug: used, not used + size
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += int(sizes[name])
    return [*shards, current] if current else shards


def _saved(tmp_path, limit, planner, monkeypatch, params=None, model=None):
    if planner is not None:
        monkeypatch.setattr(ck, "plan_shards", planner)
    model = model or micro_model("gpt2")
    params = params if params is not None else model.init_params(0)
    out = ck.save_checkpoint(tmp_path / "run", 1, params, full_stamps("gpt2", model),
                             max_shard_bytes=limit)  # fmt: skip
    return shard_fill(out)


def test_the_reviewers_overfill_is_seen_on_disk(tmp_path, monkeypatch):
    """204 bytes of tensors in a shard with limit 108 passed every other observation."""
    sizes = {"a": 96, "b": 12, "c": 96, "d": 96}  # a + b = 108 exactly; + c = 204
    params = {n: np.zeros(s // 4, dtype=np.float32) for n, s in sizes.items()}
    fill = _saved(tmp_path, 108, plan_shards_overfilling, monkeypatch, params)
    first = "model-00001-of-00002.safetensors"
    assert fill[first] == (3, 204)
    assert fill_problems(fill, 108) == [f"{first}: 3 tensors, 204 bytes > limit 108"]
    assert first_shard_bytes(fill) == 204  # != 108: the exact-limit case sees it too


def test_the_real_planner_fills_shard_1_exactly_and_never_overfills(tmp_path, monkeypatch):
    params = micro_model("gpt2").init_params(0)
    sizes = {n: int(a.nbytes) for n, a in params.items()}
    limit = exact_limit(sizes)
    assert limit >= max(sizes.values())
    fill = _saved(tmp_path, limit, None, monkeypatch, params)
    assert first_shard_bytes(fill) == limit
    assert fill[ck.shard_file_name(1, len(fill))][0] >= 2  # two tensors or more end at it
    assert fill_problems(fill, limit) == []
    target = sum(sizes.values()) // 4
    assert fill_problems(_saved(tmp_path / "t", target, None, monkeypatch, params), target) == []


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_off_by_one_planner_is_seen_only_by_the_exact_limit(tmp_path, monkeypatch, family):
    model = micro_model(family)
    params = model.init_params(0)
    limit = exact_limit({n: int(a.nbytes) for n, a in params.items()})
    fill = _saved(tmp_path, limit, plan_shards_closing_at_the_limit, monkeypatch, params, model)
    assert first_shard_bytes(fill) is not None and first_shard_bytes(fill) < limit
    assert fill_problems(fill, limit) == []  # it never overfills: only shard 1 shows it


def test_inv_rel_012_judges_the_fill_for_every_family_and_declares_the_mutant():
    inv = _invariant("INV-REL-012")
    families = inv["check"]["params"]["families"]
    assert families == ["gpt2", "llama", "mlp"]  # class 6: every model family
    expect = inv["expect"]
    assert expect["shards_over_limit"] == {"eq": 0}
    assert expect["exact_first_shard_full"] == {"eq": len(families)}
    for key in ("families", "same_logits", "same_eval_loss", "same_predictions"):
        assert expect[key] == {"eq": len(families)}, key
    (f037,) = [f for f in _release()["falsifiers"] if f["id"] == "FALSIFY-REL-037"]
    assert f037["target"] == "INV-REL-012"
    assert f037["mutant"]["patch"] == {
        "kernels.checkpoint:plan_shards":
            "falsifiers.mutants.release_checkpoint:plan_shards_closing_at_the_limit"
    }  # fmt: skip


def test_the_check_on_the_classifier(tmp_path):
    """The mlp family end to end: tensors, stamps, logits, eval loss and predicted classes
    identical, shard 1 full at the exact limit, the damaged copies refused."""
    params = {**_invariant("INV-REL-012")["check"]["params"], "families": ["mlp"]}
    ctx = CheckContext(params, 11, tmp_path / "scratch", tmp_path / "art", "T", root=ROOT)
    obs = sharded_checkpoint(ctx)
    assert obs["families"] == 1 and obs["min_shards"] >= 3
    assert obs["exact_first_shard_full"] == 1 and obs["shards_over_limit"] == 0
    assert obs["tensor_mismatches"] == obs["stamp_mismatches"] == obs["load_errors"] == 0
    assert obs["same_logits"] == obs["same_eval_loss"] == obs["same_predictions"] == 1
    assert obs["refused"] == 4 and obs["refusals_not_naming_file_and_tensor"] == 0
