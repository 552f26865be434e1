"""Tests of the data-governance core used by contracts/data.yaml: the drift kernels
(against pure-Python references: no NumPy, no SciPy), the drift detector, the audit
chain and the training gate (policy, PII approvals, every decision audited)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import auditchain as audit
from kernels.data.drift import (
    DriftDetector,
    bin_counts,
    digit_block_slices,
    ks_critical,
    ks_statistic,
    psi,
    slice_means,
)
from kernels.data.governance import (
    DECISION_EVENT,
    GovernanceError,
    PolicyError,
    approve_pii,
    authorize_training,
    load_policy,
)
from kernels.data.manifest import DatasetDigestError, dataset_path, datasets_root


# ------------------------------------------------------- pure-Python references
def ref_bin_counts(xs: list[float], edges: list[float]) -> list[int]:
    nb = len(edges) - 1
    out = [0] * nb
    for v in xs:
        k = 0
        for j in range(nb):
            if v >= edges[j]:
                k = j
        out[min(k, nb - 1)] += 1
    return out


def ref_psi(ref: list[float], cur: list[float], eps: float) -> float:
    sr, sc = sum(ref), sum(cur)
    total = 0.0
    for r, c in zip(ref, cur, strict=True):
        p, q = max(r / sr, eps), max(c / sc, eps)
        total += (q - p) * math.log(q / p)
    return total


def ref_ks(a: list[float], b: list[float]) -> float:
    """sup over every sample point of |F_a - F_b| (right-continuous ECDFs), O(n^2)."""
    d = 0.0
    for x in a + b:
        fa = sum(1 for v in a if v <= x) / len(a)
        fb = sum(1 for v in b if v <= x) / len(b)
        d = max(d, abs(fa - fb))
    return d


@pytest.mark.parametrize("seed", range(6))
def test_ks_kernel_matches_reference_with_ties(seed):
    r = random.Random(seed)
    n, m = r.randint(1, 40), r.randint(1, 40)
    a = [r.choice([0.0, 0.25, 0.5, r.random()]) for _ in range(n)]
    b = [r.choice([0.0, 0.5, 1.0, r.random()]) + 0.1 * seed for _ in range(m)]
    assert ks_statistic(a, b) == pytest.approx(ref_ks(a, b), abs=1e-12)


def test_ks_extremes():
    assert ks_statistic([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert ks_statistic([0.0] * 5, [1.0] * 7) == 1.0
    assert ks_statistic([1e300, -1e300], [0.0]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_psi_and_bins_match_reference(seed):
    r = random.Random(100 + seed)
    edges = sorted({round(r.uniform(-1, 1), 3) for _ in range(r.randint(2, 12))})
    if len(edges) < 2:
        edges = [-1.0, 1.0]
    xs = [r.uniform(-1.5, 1.5) for _ in range(r.randint(1, 300))]
    assert bin_counts(xs, edges).tolist() == ref_bin_counts(xs, edges)
    ref = [r.randint(0, 50) for _ in range(len(edges) - 1)]
    cur = [r.randint(0, 50) for _ in range(len(edges) - 1)]
    ref[0] += 1
    cur[-1] += 1
    assert psi(ref, cur, 1e-4) == pytest.approx(ref_psi(ref, cur, 1e-4), rel=1e-12)


def test_psi_is_zero_on_equal_histograms_and_finite_on_empty_bins():
    assert psi([3, 0, 7], [30, 0, 70]) == 0.0
    v = psi([100, 0, 0], [0, 0, 100])
    assert math.isfinite(v) and v > 5


def test_slice_means_matches_reference():
    r = random.Random(7)
    X = [[r.random() for _ in range(6)] for _ in range(5)]
    slices = [[0, 1], [5], [2, 3, 4]]
    got = slice_means(np.array(X, dtype=np.float32), slices)
    for i, row in enumerate(X):
        for s, idx in enumerate(slices):
            want = sum(float(np.float32(row[k])) for k in idx) / len(idx)
            assert got[i, s] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ks_statistic([], [1.0]),
        lambda: ks_statistic([[1.0]], [1.0]),
        lambda: ks_statistic([float("nan")], [1.0]),
        lambda: psi([1, 2], [1, 2, 3]),
        lambda: psi([0, 0], [1, 1]),
        lambda: bin_counts([0.5], [1.0, 1.0]),
        lambda: slice_means(np.zeros((2, 3)), [[3]]),
        lambda: ks_critical(0, 5, 0.05),
    ],
)
def test_wrappers_validate(call):
    with pytest.raises(ValueError):
        call()


def test_ks_critical_value():
    # c(0.05) = 1.3581 (Smirnov's table)
    assert ks_critical(100, 100, 0.05) == pytest.approx(1.3581 * math.sqrt(2 / 100), rel=1e-3)


def test_detector_names_the_shifted_block_and_is_quiet_on_iid():
    from kernels.data.digits import load_digits

    X, _ = load_digits()
    slices = digit_block_slices()
    names = list(slices)
    alarms = 0
    for s in range(40):
        p = np.random.default_rng(s).permutation(len(X))
        det = DriftDetector(X[p[:1257]], slices, dataset={"name": "digits"})
        alarms += det.detect(X[p[1257:1527]]).alert
    assert alarms <= 2
    p = np.random.default_rng(99).permutation(len(X))
    cur = X[p[1257:1527]].copy()
    target = names[5]
    cur[:, slices[target]] = np.clip(cur[:, slices[target]] + 0.3, 0, 1)
    rep = DriftDetector(X[p[:1257]], slices, dataset={"name": "digits"}).detect(cur)
    assert rep.alert and rep.drifted[0] == target
    sug = rep.retrain_suggestion()
    assert sug is not None and sug["dataset"] == {"name": "digits"} and target in sug["slices"]
    json.dumps(rep.to_dict())


@pytest.mark.parametrize("seed", [0, 1])
def test_detector_slices_equal_the_public_functions_on_the_raw_columns(seed):
    # detect() hands ks_statistic the reference sorted once and the current sample's
    # columns copied once: each slice's D, PSI and counts must be those of the public
    # functions on the unsorted, strided columns (ties included: values on a grid)
    rng = np.random.default_rng(seed)
    ref = np.round(rng.random((300, 12)) * 8) / 8
    cur = np.round(rng.random((90, 12)) * 8) / 8 + 0.1 * (rng.random((90, 12)) < 0.3)
    slices = {f"s{i}": [i, (i + 5) % 12] for i in range(6)}
    det = DriftDetector(ref, slices, bins=7)
    rep = det.detect(cur)
    ref_means, cur_means = (
        slice_means(ref, list(slices.values())),
        slice_means(cur, list(slices.values())),
    )
    for s, got in enumerate(rep.slices):
        edges = det._edges[s]
        ref_counts = bin_counts(ref_means[:, s], edges)
        counts = bin_counts(cur_means[:, s], edges)
        assert got.ks == ks_statistic(ref_means[:, s], cur_means[:, s])
        assert got.psi == psi(ref_counts, counts, det.eps)
        assert got.cur_counts == counts.tolist() and got.ref_counts == ref_counts.tolist()


# ------------------------------------------------------------------ audit chain
def test_audit_chain_appends_verifies_and_detects_edits(tmp_path):
    log = tmp_path / "a" / "audit.jsonl"
    h1 = audit.append_event(log, "x", n=1)
    h2 = audit.append_event(log, "y", n=2)
    assert h1 != h2
    head, count, problems = audit.verify_chain(log)
    assert (head, count, problems) == (h2, 2, [])
    lines = log.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["n"] = 5
    log.write_text(json.dumps(rec, sort_keys=True) + "\n" + lines[1] + "\n")
    assert audit.verify_chain(log)[2]


# ------------------------------------------------------------------ governance
@pytest.fixture()
def data_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "datasets"
    shutil.copytree(datasets_root(), dst)
    return dst / "manifest.yaml"


def _edit(mpath: Path, name: str, **fields):
    doc = yaml.safe_load(mpath.read_text())
    for e in doc["datasets"]:
        if e["name"] == name:
            e.update(fields)
    mpath.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_shipped_datasets_are_allowed_and_the_decision_is_logged(tmp_path):
    log = tmp_path / "audit.jsonl"
    d = authorize_training(["pystdlib", "digits", "tokenizer-1024"], audit=log)
    assert d.allowed and d.rule is None
    (ev,) = audit.read_events(log)
    assert ev["event"] == DECISION_EVENT and ev["decision"] == "allowed"
    assert [x["name"] for x in ev["datasets"]] == ["pystdlib", "digits", "tokenizer-1024"]
    assert audit.verify_chain(log)[2] == []


@pytest.mark.parametrize(
    "fields, rule",
    [
        ({"license": "CC-BY-NC-SA-4.0"}, "licenses.deny '*-NC*'"),
        ({"license": "proprietary"}, "licenses.deny 'proprietary'"),
        ({"license": "LicenseRef-x"}, "licenses.allow"),
        ({"source": "Web scrape of forum posts"}, "sources.deny '*scrape*'"),
        ({"source": "someone's laptop"}, "sources.allow"),
    ],
)
def test_policy_refuses_with_the_rule_in_one_line(data_copy, tmp_path, fields, rule):
    _edit(data_copy, "digits", **fields)
    log = tmp_path / "audit.jsonl"
    with pytest.raises(GovernanceError) as ei:
        authorize_training(["pystdlib", "digits"], manifest=data_copy, audit=log)
    msg = str(ei.value)
    assert "\n" not in msg and "'digits'" in msg and rule in msg
    assert isinstance(ei.value, ValueError) and ei.value.decision.rule == rule
    (ev,) = audit.read_events(log)
    assert ev["decision"] == "refused" and ev["rule"] == rule


def test_denied_name_and_malformed_policy(data_copy, tmp_path):
    pol = yaml.safe_load((datasets_root() / "policy.yaml").read_text())
    pol["datasets"]["deny"] = ["digits"]
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(pol))
    with pytest.raises(GovernanceError, match="datasets.deny 'digits'"):
        authorize_training(["digits"], policy=p, audit=tmp_path / "a.jsonl")
    pol["licences"] = pol.pop("licenses")
    p.write_text(yaml.safe_dump(pol))
    with pytest.raises(PolicyError, match="unknown key 'licences'"):
        load_policy(p)


@pytest.mark.parametrize(
    "old, new, line, says",
    [
        ("licenses:", "licences:", 10, "unknown key 'licences'; the keys are 'version'"),
        ("  deny: []  ", "  deny: digits", 9, "'datasets.deny' must be a list of patterns"),
        ("    - MIT\n", "    - 3\n", 15, "'licenses.allow' item 4 must be a non-empty pattern"),
        ("sources:\n", "sources:\n  permit: []\n", 28, "'sources' may only have 'allow' and"),
        ("    - PSF-2.0\n", "    - PSF-2.0\n   - [x\n", 13, "does not parse: "),
        ("    - MIT\n", "    - MIT\x07\n", 15, "does not parse: special characters"),
        ("Clause\n  deny:", "Clause\n  yes: []\n  deny:", 19, "'licenses' may only have 'allow'"),
        ("licenses:\n  allow:", "licenses: &a\n  loop: [*a]\n  allow:", 11, "'licenses' may"),
    ],
)
def test_a_malformed_policy_is_named_at_its_line(tmp_path, old, new, line, says):
    text = (datasets_root() / "policy.yaml").read_text()
    assert old in text
    p = tmp_path / "policy.yaml"
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(PolicyError) as err:
        load_policy(p)
    assert str(err.value).startswith(f"policy {p}:{line}: {says}")
    assert "\n" not in str(err.value) and len(str(err.value)) < 300 + len(str(p))


def test_a_policy_that_is_not_utf8_is_named_at_its_line(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_bytes(b"version: 1\ndatasets:\n  deny: [caf\xe9]\n")
    with pytest.raises(PolicyError, match=r"policy .*policy\.yaml:3: is not UTF-8 text"):
        load_policy(p)


def test_aliases_in_a_policy_cost_nothing_to_report(tmp_path):
    """Finding the line follows the failing key's path only: aliases nested ten wide
    and seven deep (10**7 paths) are not walked."""
    rows = ["version: 1", "a0: &a0 [x, y]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    rows.append("licences: [*a6]")
    p = tmp_path / "policy.yaml"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(PolicyError, match=r"policy\.yaml:2: unknown key 'a0' \(and 7 more\)"):
        load_policy(p)


def test_digest_mismatch_is_refused_and_logged(data_copy, tmp_path):
    f = data_copy.parent / "digits" / "digits.csv.gz"
    f.write_bytes(f.read_bytes() + b"x")
    log = tmp_path / "a.jsonl"
    with pytest.raises(GovernanceError, match="rule manifest"):
        authorize_training(["digits"], manifest=data_copy, audit=log)
    assert audit.read_events(log)[0]["decision"] == "refused"
    with pytest.raises(DatasetDigestError):
        dataset_path("digits", manifest=data_copy)


def test_pii_blocks_until_the_exact_content_is_approved(data_copy, tmp_path):
    from kernels.data.manifest import sha256_file

    corpus = data_copy.parent / "pystdlib" / "corpus.txt"
    corpus.write_text(corpus.read_text() + "\n# contact: jane.roe@mailbox.org\n")
    _edit(data_copy, "pystdlib", sha256=sha256_file(corpus), size_bytes=corpus.stat().st_size)
    log = tmp_path / "audit.jsonl"
    with pytest.raises(GovernanceError, match=r"PII-flagged \(email=1\)"):
        authorize_training(["pystdlib"], manifest=data_copy, audit=log)
    approve_pii("pystdlib", approver="dpo", reason="test", audit=log, manifest=data_copy)
    assert authorize_training(["pystdlib"], manifest=data_copy, audit=log).allowed
    # approvals are read from other logs too, but only when their chain verifies
    other = tmp_path / "decisions.jsonl"
    assert authorize_training(
        ["pystdlib"], manifest=data_copy, audit=other, approvals=[log]
    ).allowed
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[1:]) + "\n")  # drop the first line: chain broken
    with pytest.raises(GovernanceError, match="not trusted"):
        authorize_training(["pystdlib"], manifest=data_copy, audit=other, approvals=[log])
    events = [e["decision"] for e in audit.read_events(other)]
    assert events == ["allowed", "refused"]


def test_manifest_pii_flag_alone_blocks(data_copy, tmp_path):
    _edit(data_copy, "digits", pii=True)
    with pytest.raises(GovernanceError, match="manifest pii: true"):
        authorize_training(["digits"], manifest=data_copy, audit=tmp_path / "a.jsonl")


def test_bad_arguments():
    with pytest.raises(ValueError):
        authorize_training("digits")  # a string, not a list
    with pytest.raises(ValueError):
        approve_pii("digits", approver="", reason="x")


def test_manifest_env_override_points_every_loader_at_a_copy(data_copy, monkeypatch):
    from kernels.data.digits import load_digits

    monkeypatch.setenv("KERNELS_DATA_MANIFEST", str(data_copy))
    assert dataset_path("digits") == (data_copy.parent / "digits" / "digits.csv.gz").resolve()
    f = data_copy.parent / "digits" / "digits.csv.gz"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(DatasetDigestError):
        load_digits()


def test_trainer_asks_governance_before_step_1(tmp_path, monkeypatch):
    from kernels.train import TrainConfig, TrainError, train

    pol = yaml.safe_load((datasets_root() / "policy.yaml").read_text())
    pol["licenses"]["allow"] = ["MIT"]  # CC-BY-4.0 (digits) no longer allowed
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(pol))
    monkeypatch.setenv("KERNELS_DATA_POLICY", str(p))
    monkeypatch.setenv("KERNELS_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    cfg = TrainConfig(family="mlp", steps=1, eval_every=1, ckpt_every=1)
    with pytest.raises(TrainError, match="rule licenses.allow"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (ev,) = audit.read_events(tmp_path / "audit.jsonl")
    assert ev["decision"] == "refused" and ev["rule"] == "licenses.allow"


def test_wrappers_accept_exactly_what_numpy_calls_a_number():
    # _vec reads the dtype's kind instead of calling np.issubdtype(dtype, np.number):
    # the same dtypes must pass its first test (timedelta64 is a number to NumPy; bool,
    # datetime64, object and text are not)
    from kernels.data.drift import _NUMERIC_KINDS

    dtypes = [np.int8, np.uint64, np.float16, np.float64, np.complex64, np.bool_, object, "U3",
              "m8[s]", "M8[s]"]  # fmt: skip
    for dt in dtypes:
        d = np.dtype(dt)
        assert (d.kind in _NUMERIC_KINDS) == bool(np.issubdtype(d, np.number)), d
