"""The model's lifecycle audit log: one hash-chained log (``auditchain``) for every
decision and artifact of a model's life.

Events, each linking the artifact digests it concerns:

- ``data.training_decision`` / ``data.pii_approval`` (``kernels.data.governance``);
- ``training.start`` (run dir, config sha256, datasets with their sha256, init weights),
  ``checkpoint.write`` (step, the sha256 of every file written, the weights digest),
  ``training.finish`` (final checkpoint, weights digest, steps, stopped or not);
- ``model.serve`` (the weights now served), ``canary.decision`` (current and
  candidate weights digests, both losses, accepted or not), ``canary.rollback``
  (the candidate refused, the current one kept);
- ``backup.snapshot`` (archive sha256 and its manifest), ``backup.restore``
  (archive sha256, the sha256 of every file restored);
- ``promotion`` (written by the release tool into the same log when its release
  policy names it).

The log is ``$KERNELS_AUDIT_LOG``, else ``evidence/lifecycle/audit.jsonl`` of this
repository. A check points it into its own scratch folder (``[tool.harness]
check-env``), so checks never write into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import auditchain
from kernels.checkpoint import sha256_file

AUDIT_ENV = "KERNELS_AUDIT_LOG"


def audit_path() -> Path:
    """Where lifecycle events go: ``$KERNELS_AUDIT_LOG``, else the repository's
    ``evidence/lifecycle/audit.jsonl``."""
    env = os.environ.get(AUDIT_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "evidence" / "lifecycle" / "audit.jsonl"


def record(event: str, log: Path | str | None = None, **data: Any) -> str:
    """Append ``event`` durably to the lifecycle log (``log``, else ``audit_path()``);
    returns the new head."""
    return auditchain.append_event(Path(log) if log is not None else audit_path(), event, **data)


def folder_digests(folder: Path | str) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``folder``."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }
