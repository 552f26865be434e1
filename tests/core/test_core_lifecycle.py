"""The core's lifecycle events (kernels.lifecycle): training, checkpoints, serving,
the canary and backup each append to one audit chain, naming the bytes concerned."""

from __future__ import annotations

from pathlib import Path

import pytest

import auditchain
from kernels import lifecycle
from kernels.backup import RestoreError, restore, snapshot
from kernels.checkpoint import weights_digest
from kernels.release import canary_rollout, serve
from kernels.train import TrainConfig, train


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "lifecycle.jsonl"
    monkeypatch.setenv(lifecycle.AUDIT_ENV, str(path))
    return path


def _mlp(out: Path, steps: int, seed: int = 0):
    cfg = TrainConfig(family="mlp", model={"hidden": [8]}, steps=steps, ckpt_every=steps // 2,
                      eval_every=steps // 2, batch_size=16, threads=1, seed=seed)  # fmt: skip
    return train(cfg, out)


def test_training_appends_its_decision_start_checkpoints_and_finish(tmp_path, log):
    result = _mlp(tmp_path / "run", 20)
    events = auditchain.read_events(log)
    assert [e["event"] for e in events] == [
        "data.training_decision", "training.start", "checkpoint.write", "checkpoint.write",
        "training.finish",
    ]  # fmt: skip
    assert auditchain.verify_chain(log)[2] == []
    lines = log.read_bytes().split(b"\n")
    assert events[1]["governance"] == auditchain.line_hash(lines[0])
    for ev in events[2:4]:
        ckpt = Path(ev["checkpoint"])
        assert ev["files"] == lifecycle.folder_digests(ckpt)
        assert ev["weights_sha256"] == weights_digest(ckpt)
    assert events[-1]["weights_sha256"] == result.weights_sha256


def test_canary_rollback_and_backup_restore_are_events(tmp_path, log):
    current = _mlp(tmp_path / "current", 20).checkpoint
    worse = _mlp(tmp_path / "worse", 2, seed=1).checkpoint
    deploy = tmp_path / "deploy"
    serve(deploy, current)
    decision = canary_rollout(deploy, worse, margin=0.0)
    assert not decision.accepted
    archive = tmp_path / "snap.tar.gz"
    snapshot({"checkpoint": current}, archive)
    restore(archive, tmp_path / "restored")
    with pytest.raises(RestoreError):
        restore(archive, tmp_path / "restored")  # exists: refused, and said so
    kinds = [e["event"] for e in auditchain.read_events(log)]
    tail = kinds[kinds.index("model.serve") :]
    assert tail == ["model.serve", "canary.decision", "canary.rollback", "backup.snapshot",
                    "backup.restore", "backup.restore_refused"]  # fmt: skip
    events = {e["event"]: e for e in auditchain.read_events(log)}
    assert events["canary.rollback"]["candidate_sha256"] == weights_digest(worse)
    assert events["canary.rollback"]["current_sha256"] == weights_digest(current)
    assert events["backup.snapshot"]["sha256"] == lifecycle.sha256_file(archive)
    assert events["backup.restore"]["files"] == lifecycle.folder_digests(tmp_path / "restored")
    assert auditchain.verify_chain(log)[2] == []
