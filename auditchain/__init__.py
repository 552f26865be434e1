"""A hash-chained audit log: one JSON line per event, each carrying the sha256 of
the line before it (``prev``, 64 zeros for the first) and its position (``seq``).
An edited, removed, reordered or forged line breaks the chain.

It is the one implementation the tool (``harness``: run logs, promotions) and the
system it certifies (``kernels``: data governance, training, checkpoints, canary,
backup and restore) share, so a model's whole lifecycle and its promotion are
events of one chain. Standard library only; it imports nothing of the project.

Every append takes an exclusive ``flock`` on the file and extends the chain from
what the file holds at that instant: two processes appending to one log still make
one chain. Before extending a file it did not write last, a writer walks and
verifies it, and refuses (``ChainError``) to extend a broken chain.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "GENESIS",
    "MAX_LOG",
    "AuditLog",
    "ChainError",
    "append_event",
    "line_hash",
    "read_events",
    "verify_chain",
    "verify_lines",
]

GENESIS = "0" * 64
MAX_LOG = 256 << 20  # an audit log larger than this is refused unread


class ChainError(ValueError):
    """The log cannot be extended: it does not verify, or it cannot be read."""


def line_hash(line: bytes) -> str:
    """The sha256 of one line (without its newline): the next line's ``prev``."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """Appends events to the chain at ``path`` (created with its parents).

    ``durable``: fsync after every event (a lifecycle event must survive a crash);
    otherwise only ``close`` syncs (a run log, sealed when the run ends)."""

    def __init__(self, path: Path | str, durable: bool = False) -> None:
        self.path = Path(path)
        self.durable = durable
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - kept open for the log's life
        self._size = -1  # the file size after our last append; -1: never read
        self.head = GENESIS
        self.count = 0
        with self._locked():
            self._catch_up()

    def _locked(self) -> _Lock:
        return _Lock(self._fh.fileno())

    def _catch_up(self) -> None:
        """Re-read the chain when someone else wrote since our last append, and
        refuse to extend it unless it verifies."""
        size = os.fstat(self._fh.fileno()).st_size
        if size == self._size:
            return
        if size > MAX_LOG:
            raise ChainError(f"{self.path}: larger than {MAX_LOG >> 20} MiB; start a new log")
        self._fh.seek(0)
        head, count, problems = verify_lines(self._fh.read())
        if problems:
            raise ChainError(f"{self.path}: will not extend a broken chain: {problems[0]}")
        self.head, self.count, self._size = head, count, size

    def append(self, event: str, **data: Any) -> str:
        """Append one event; returns the new head (the sha256 of the line written)."""
        with self._locked():
            self._catch_up()
            record = {
                "seq": self.count,
                "time": _dt.datetime.now(_dt.UTC).isoformat(),
                "event": event,
                "prev": self.head,
                **data,
            }
            line = json.dumps(record, sort_keys=True, default=str).encode()
            self._fh.seek(0, os.SEEK_END)
            self._fh.write(line + b"\n")
            self._fh.flush()
            if self.durable:
                os.fsync(self._fh.fileno())
            self.head = line_hash(line)
            self.count += 1
            self._size = os.fstat(self._fh.fileno()).st_size
        return self.head

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Lock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def append_event(path: Path | str, event: str, **data: Any) -> str:
    """Append one event durably to the chain at ``path``; returns the new head."""
    with AuditLog(path, durable=True) as log:
        return log.append(event, **data)


def read_events(path: Path | str) -> list[dict[str, Any]]:
    """Every event of the log as written (empty when the file does not exist). Read
    what you trust only after ``verify_chain`` said it holds."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for raw in p.read_bytes().split(b"\n"):
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def verify_chain(path: Path | str, missing_ok: bool = False) -> tuple[str, int, list[str]]:
    """Walk the chain: ``(head, count, problems)``; no problems means it verifies.
    Lines are split on ``\\n`` alone and each must end with it: a ``\\r``, a partial
    last line or an empty line is a problem. A missing file is a problem unless
    ``missing_ok`` (then an empty chain)."""
    p = Path(path)
    try:
        mode = os.lstat(p).st_mode
        if not stat.S_ISREG(mode):
            return GENESIS, 0, ["not a regular file"]
        with open(p, "rb") as fh:
            data = fh.read(MAX_LOG + 1)
    except FileNotFoundError:
        return GENESIS, 0, [] if missing_ok else ["cannot read: No such file or directory"]
    except OSError as exc:
        return GENESIS, 0, [f"cannot read: {exc.strerror}"]
    if len(data) > MAX_LOG:
        return GENESIS, 0, [f"larger than the {MAX_LOG >> 20} MiB an audit log may have"]
    return verify_lines(data)


def verify_lines(data: bytes) -> tuple[str, int, list[str]]:
    """:func:`verify_chain` over the bytes of a log."""
    problems: list[str] = []
    head, count = GENESIS, 0
    if not data:
        return head, count, problems
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
