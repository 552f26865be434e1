"""A hash-chained audit log: one JSON line per event, each carrying the sha256
of the line before it. The head (the sha256 of the last line) goes into the
signed verdict, so a truncated, reordered or edited log is detectable."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
MAX_LOG = 256 << 20  # an audit log larger than this is refused unread


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.head = GENESIS
        self.count = 0
        if path.exists():  # continue an existing chain (lines end with "\n", nothing else)
            for raw in path.read_bytes().split(b"\n"):
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
    """Walk the chain: (head, count, problems). Lines are split on ``\n`` alone and
    each must end with it: a ``\r``, a partial last line or an empty line is a problem."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            return GENESIS, 0, ["not a regular file"]
        with open(path, "rb") as fh:
            data = fh.read(MAX_LOG + 1)
    except OSError as exc:
        return GENESIS, 0, [f"cannot read: {exc.strerror}"]
    if len(data) > MAX_LOG:
        return GENESIS, 0, [f"larger than the {MAX_LOG >> 20} MiB an audit log may have"]
    return verify_lines(data)


def verify_lines(data: bytes) -> tuple[str, int, list[str]]:
    """:func:`verify_chain` over the bytes of a log."""
    problems: list[str] = []
    head, count = GENESIS, 0
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the log ends with a newline, as it must
    if tail:
        lines.append(tail)
        problems.append(f"line {len(lines)}: no newline at its end (a partial line)")
    for n, raw in enumerate(lines, 1):
        if not raw:
            problems.append(f"line {n}: empty line in the chain")
            continue
        if b"\r" in raw:
            problems.append(f"line {n}: a carriage return in the line")
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            problems.append(f"line {n}: not a JSON object")
        else:
            if record.get("prev") != head:
                problems.append(
                    f"line {n}: prev hash does not match line {n - 1} "
                    "(a line was edited, removed or reordered)"
                )
            seq = record.get("seq")
            if type(seq) is not int or seq != count:
                problems.append(f"line {n}: seq {seq!r} where {count} was expected")
        head = line_hash(raw)
        count += 1
    return head, count, problems
