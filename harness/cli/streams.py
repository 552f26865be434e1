"""Standard output and error that outlive their reader.

``harness history | head -1`` closes the pipe after one line; the next write
fails with EPIPE. A command must not die of it: a run goes on and seals its
bundle, and every command exits with the code it would have had. So the
console script writes through ``ReaderGoneWriter``: once the reader has gone,
that file descriptor is pointed at ``/dev/null`` (so later writes, the final
flush at exit and any child that inherits it write nowhere) and the write
counts as done.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any


class ReaderGoneWriter(io.RawIOBase):
    """Writes to ``fd``; when its reader has gone (EPIPE), to ``/dev/null``. Closing
    it leaves ``fd`` open: the descriptor is the process's."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.reader_gone = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if self.reader_gone:
            return size
        try:
            return os.write(self.fd, data)
        except BrokenPipeError:
            self.reader_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.fd)
            finally:
                os.close(devnull)
            return size


def _guarded(stream: Any) -> Any:
    """``stream`` rebuilt over a ReaderGoneWriter of its descriptor, with its
    encoding and buffering; ``stream`` itself when it has no descriptor (a test's)."""
    if not isinstance(stream, io.TextIOWrapper):
        return stream
    try:
        fd = stream.fileno()
        stream.flush()
    except (OSError, ValueError):
        return stream
    raw = ReaderGoneWriter(fd)
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
        write_through=stream.write_through,
    )


def guard_standard_streams() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` survive their reader going away."""
    sys.stdout = _guarded(sys.stdout)
    sys.stderr = _guarded(sys.stderr)
