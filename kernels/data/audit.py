"""A small hash-chained audit log for data-governance decisions (JSON lines).

Each line is one JSON object with ``seq`` (0, 1, ...), ``time``, ``event`` and
``prev`` (the sha256 of the previous line, 64 zeros for the first), so an edited,
removed, reordered or forged line breaks the chain. The format is the one the
harness uses for its run log (``harness.audit``), so ``harness.audit.verify_chain``
reads these files too; the core does not import the harness.

Appends take an exclusive ``flock`` on the file, so two processes deciding at the
same time still produce one chain.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["GENESIS", "line_hash", "append_event", "read_events", "verify_chain"]

GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def append_event(path: str | Path, event: str, **data: Any) -> str:
    """Append one event to the chain at ``path`` (created with its parents); returns
    the new head (the sha256 of the line written)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.seek(0)
            head, count = GENESIS, 0
            for raw in fh.read().splitlines():
                if raw.strip():
                    head, count = line_hash(raw), count + 1
            record = {
                "seq": count,
                "time": _dt.datetime.now(_dt.UTC).isoformat(),
                "event": event,
                "prev": head,
                **data,
            }
            line = json.dumps(record, sort_keys=True, default=str).encode()
            fh.seek(0, os.SEEK_END)
            fh.write(line + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return line_hash(line)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every parseable event of the log (empty when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for raw in p.read_bytes().splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def verify_chain(path: str | Path) -> tuple[str, int, list[str]]:
    """Walk the chain: ``(head, count, problems)``; no problems means it verifies.
    A missing file is an empty chain."""
    p = Path(path)
    if not p.exists():
        return GENESIS, 0, []
    problems: list[str] = []
    head, count = GENESIS, 0
    for n, raw in enumerate(p.read_bytes().splitlines(), 1):
        if not raw.strip():
            problems.append(f"line {n}: empty line in the chain")
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            problems.append(f"line {n}: not a JSON object")
        else:
            if rec.get("prev") != head:
                problems.append(
                    f"line {n}: prev hash does not match line {n - 1} "
                    "(a line was edited, removed or reordered)"
                )
            if rec.get("seq") != count:
                problems.append(f"line {n}: seq {rec.get('seq')} where {count} was expected")
        head = line_hash(raw)
        count += 1
    return head, count, problems
