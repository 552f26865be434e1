"""Atomic file writes: a temp file in the same directory, fsync, rename.

The file gets the mode an ordinary write would give it: an existing file keeps
its own, a new one what ``open`` gives a new file (0666 less the umask, 0644
under the usual 022, or the folder's default ACL). Only a secret asks for another
mode (``mode=0o600``); private keys are written that way (``harness.signing``),
never through a report or bundle writer. It also reads the files a check left
without following a link (its logs, its declared artifacts).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# a new file only, never through a link; not inherited by the processes we start
_TEMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _kept_mode(path: Path) -> int | None:
    """The mode of ``path`` when it is a regular file (a rewrite keeps it), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _create_temp(parent: Path, name: str, perm: int) -> tuple[int, str]:
    """A new file ``parent/.NAME.RANDOM.tmp`` (created with ``perm`` less the umask) and
    its path; the folder is made when missing. The name is random, as mkstemp's, so
    names left by others (or made in advance in a shared folder) are stepped over."""
    made = False
    for _ in range(100):
        tmp = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, perm), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            if made:
                raise
            parent.mkdir(parents=True, exist_ok=True)
            made = True
    raise FileExistsError(f"{parent}: no free temporary name for {name} after 100 tries")


def atomic_write_bytes(
    path: Path, data: bytes, *, durable: bool = True, mode: int | None = None
) -> None:
    """Write ``data`` to ``path`` atomically. An existing file keeps its mode and a new
    one gets what ``open`` gives, unless ``mode`` is given (a secret: 0o600).

    The temp is created with the mode the file keeps (0666 less the umask for a new
    file); a given mode or an existing file's is set on the temp before any byte is
    written, and a secret's temp is 0600 from its creation."""
    if mode is None:
        mode = _kept_mode(path)
    fd, tmp = _create_temp(path.parent, path.name, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(
    path: Path, text: str, *, durable: bool = True, mode: int | None = None
) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, mode=mode)


def dumps_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=True) + "\n"


def atomic_write_json(
    path: Path, data: Any, *, durable: bool = True, mode: int | None = None
) -> None:
    atomic_write_text(path, dumps_json(data), durable=durable, mode=mode)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_ARTIFACT = 512 * 1024 * 1024  # bytes of one artifact file copied into the bundle


def write_beneath(base: Path, rel: str, chunks: Iterable[bytes], size: int | None = None) -> None:
    """Write a new file at ``base/rel`` (folders in ``rel`` made as needed), following
    no link at ``base`` or below it: a folder a check swapped for a link is refused
    (OSError), a file or link it planted where the file goes is replaced. ``size``
    larger than what was written extends the file, sparse, to that size."""
    base.mkdir(parents=True, exist_ok=True)
    nofollow = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    folder = os.open(base, nofollow)
    try:
        *parts, name = rel.split("/")
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=folder)
            inner = os.open(part, nofollow, dir_fd=folder)
            os.close(folder)
            folder = inner
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(name, flags, 0o644, dir_fd=folder)
        except FileExistsError:
            os.unlink(name, dir_fd=folder)
            fd = os.open(name, flags, 0o644, dir_fd=folder)
        try:
            written = 0
            for chunk in chunks:
                view = memoryview(chunk)
                written += len(view)
                while view:
                    view = view[os.write(fd, view) :]
            if size is not None and size > written:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
    finally:
        os.close(folder)


def read_capped(path: Path, cap: int) -> tuple[bytes, int]:
    """Up to ``cap`` bytes of a regular file (never through a symlink) and its size."""
    try:  # O_NONBLOCK: a FIFO planted in place of a log must not hang the coordinator
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b"", 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b"", 0
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(cap), st.st_size
    finally:
        os.close(fd)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def declared_files(arts: Path, name: str) -> list[tuple[str, Path]]:
    """The files of the artifact ``name`` a check declared: a file, or a folder's
    regular files; nothing reached through a symlink or outside ``arts``."""
    if not name or "/" in name or name in (".", ".."):
        return []
    top = arts / name
    if top.is_symlink() or not _utf8(name):
        return []
    if top.is_file():
        return [(name, top)]
    out = []
    if top.is_dir():
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
            for f in filenames:
                p = here / f
                rel = p.relative_to(arts).as_posix()
                if not _utf8(rel) or p.is_symlink() or not p.is_file():
                    continue  # a name the statement cannot carry, a link, a pipe
                out.append((rel, p))
    return sorted(out)
