"""Mutants of the model's lifecycle audit (kernels.lifecycle and the code that
records to it): bugs an engineer could commit that leave every model right and the
audit trail wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def canary_rollout_auditing_accepted_only(
    deploy: Any, candidate: Any, margin: float, split: str = "val"
) -> Any:
    """The canary records its decision where it acts on it, inside ``if accepted``: a
    refused candidate (the rollback) leaves no trace in the audit log
    (kernels.release:canary_rollout)."""
    from kernels import lifecycle
    from kernels.checkpoint import weights_digest
    from kernels.release import accept_candidate, serve, served_checkpoint

    current = served_checkpoint(deploy)
    decision = accept_candidate(current, candidate, margin, split)
    if decision.accepted:
        lifecycle.record(
            "canary.decision", deploy=str(deploy), current=str(current),
            candidate=str(candidate), current_sha256=weights_digest(current),
            candidate_sha256=weights_digest(candidate), **decision.to_dict(),
        )  # fmt: skip
        serve(deploy, candidate)
    return decision


def restore_recording_first(archive: Path, dest: Path) -> dict[str, Path]:
    """Record the restore, then do it ("log the intent"): a restore refused for a
    tampered archive is in the audit log as a restore (kernels.backup:restore)."""
    from kernels import lifecycle
    from kernels.backup import _restore
    from kernels.checkpoint import sha256_file

    lifecycle.record(
        "backup.restore", archive=str(archive), sha256=sha256_file(archive), dest=str(dest),
        files={},
    )  # fmt: skip
    return _restore(archive, dest)


def write_checkpoint_recording_first(
    out_dir: Path, cfg: Any, step: int, params: Any, opt: Any, stamps: Any, state: Any
) -> Path:
    """Record the checkpoint event before writing it, from the run's ``latest`` at that
    moment: every event names the checkpoint before it (kernels.train.state:
    write_checkpoint)."""
    import kernels.train as _t
    from kernels import checkpoint as ckpt_io
    from kernels import lifecycle

    before = ckpt_io.latest_checkpoint(out_dir)
    lifecycle.record(
        "checkpoint.write", run=str(out_dir), checkpoint=str(Path(out_dir) /
        ckpt_io.checkpoint_name(step)), step=step, purpose=cfg.purpose,
        weights_sha256=ckpt_io.weights_digest(before) if before else None,
        files=lifecycle.folder_digests(before) if before else {},
    )  # fmt: skip
    arrays, meta = _t.optimizer_arrays(opt)
    return ckpt_io.save_checkpoint(
        out_dir, step, params, stamps, optimizer=arrays, optimizer_meta=meta, trainer=state
    )
