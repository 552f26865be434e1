"""A hash-chained audit log: one JSON line per event, each carrying the sha256
of the line before it. The head (the sha256 of the last line) goes into the
signed verdict, so a truncated, reordered or edited log is detectable."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.head = GENESIS
        self.count = 0
        if path.exists():  # continue an existing chain
            for raw in path.read_bytes().splitlines():
                if raw.strip():
                    self.head = line_hash(raw)
                    self.count += 1
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for the run

    def append(self, event: str, **data: Any) -> str:
        record = {
            "seq": self.count,
            "time": _dt.datetime.now(_dt.UTC).isoformat(),
            "event": event,
            "prev": self.head,
            **data,
        }
        line = json.dumps(record, sort_keys=True, default=str).encode()
        self._fh.write(line + b"\n")
        self._fh.flush()
        self.head = line_hash(line)
        self.count += 1
        return self.head

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


def verify_chain(path: Path) -> tuple[str, int, list[str]]:
    """Walk the chain: (head, count, problems)."""
    problems: list[str] = []
    head, count = GENESIS, 0
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        return GENESIS, 0, [f"cannot read: {exc.strerror}"]
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            problems.append(f"line {n}: empty line in the chain")
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            problems.append(f"line {n}: not JSON")
            head = line_hash(raw)
            count += 1
            continue
        if record.get("prev") != head:
            problems.append(
                f"line {n}: prev hash does not match line {n - 1} "
                "(a line was edited, removed or reordered)"
            )
        if record.get("seq") != count:
            problems.append(f"line {n}: seq {record.get('seq')} where {count} was expected")
        head = line_hash(raw)
        count += 1
    return head, count, problems
