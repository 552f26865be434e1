"""Mutants of the sign-off machinery (for contracts/release.yaml)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def promotion_refuses_only_no_go(run_dir: Path, allowed_keys: list[Path]) -> list[str]:
    """A promotion gate that refuses NO-GO instead of accepting only GO: an UNPROVEN run
    (a mutant survived, a check skipped) is promoted (harness.replay:promotion_problems)."""
    import json

    from harness.signing import load_public_key
    from harness.verify import verify_run

    if not allowed_keys:
        return ["no allowed keys"]
    problems = verify_run(run_dir, [load_public_key(k) for k in allowed_keys])
    if problems:
        return ["the run does not verify under an allowed key:", *problems]
    verdict = json.loads((run_dir / "verdict.json").read_text())
    return ["the run's verdict is NO-GO"] if verdict.get("verdict") == "NO-GO" else []


def verify_nothing(run_dir: Path, public_keys: list[Any]) -> list[str]:
    """A verifier that checks nothing."""
    return []


def constant_line_hash(line: bytes) -> str:
    """A chain whose links do not depend on the lines: any edit still 'verifies'."""
    return hashlib.sha256(b"constant").hexdigest()


def drop_check_events(self: Any, key: str, kind: str) -> None:
    """An evidence writer that does not record when checks start."""
    return None
