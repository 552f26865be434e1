"""Where the release policy and the lifecycle log are, read without judging them: the
coordinator records the lifecycle log's state around a run (``harness.evidence``), the
release policy judges it at promotion (``harness.policy``). Nothing of the harness is
imported here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import auditchain

POLICY_FILE = "release-policy.yaml"


def inside_project(root: Path, path: Path) -> bool:
    """``path`` lies under ``root`` and no part of it below ``root`` is a symbolic link."""
    try:
        rel = path.absolute().relative_to(root.absolute())
    except ValueError:
        return False
    if ".." in rel.parts:
        return False
    p = root
    for part in rel.parts:
        p = p / part
        if p.is_symlink():
            return False
    return True


def log_state(log: Path) -> dict[str, Any]:
    """Where the chain at ``log`` stands: its event count and head (a missing log is an
    empty chain)."""
    head, count, _ = auditchain.verify_chain(log, missing_ok=True)
    return {"count": count, "head": head}


def declared_audit_log(root: Path) -> Path | None:
    """The ``audit-log`` the project's release policy names, read leniently (the run
    records its state; ``load_policy`` judges the policy itself at promotion)."""
    try:
        data = yaml.safe_load((root / POLICY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    rel = data.get("audit-log") if isinstance(data, dict) else None
    if not isinstance(rel, str) or not rel or not inside_project(root, root / rel):
        return None
    return root / rel
