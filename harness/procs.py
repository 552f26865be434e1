"""Process plumbing for the trust boundary (Linux; harmless no-ops elsewhere).

- ``set_parent_death_signal``: a worker dies with the process that started it;
- ``become_subreaper``: orphans of a check (a daemon it started, a child in a
  new session) are re-parented to the worker, which kills them when the check
  ends, instead of escaping to init;
- ``kill_tree``: stop, then kill, a process and every descendant;
- ``make_undumpable``: the coordinator's memory and environment are not readable
  through ``/proc`` or ptrace by other processes of the same (non-root) user;
- ``scrubbed_environment``: the environment a check gets (an allowlist);
- ``interrupts_held``: Ctrl-C and SIGTERM noted, not raised, while a run ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fnmatch
import os
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


_LIBC: list[Any] = []


def _libc() -> Any:
    """libc, loaded once (``find_library`` runs a subprocess: never per worker)."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL("libc.so.6", use_errno=True))
        except OSError:
            _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True))
    return _LIBC[0]


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Put every written file of the filesystem that holds ``path`` on disk: one
    syncfs(2) where a bundle of many files would take an fsync each (``os.sync``
    where libc has none)."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


@contextlib.contextmanager
def interrupts_held(note: str) -> Iterator[list[int]]:
    """SIGINT and SIGTERM are noted, not raised, while the body runs (a run stopping
    its checks and services and writing its bundle: a second Ctrl-C there would lose
    what the run collected). ``note`` is printed on stderr at the first one; the
    signals held are in the list yielded, for the caller to deliver once the body is
    done. The previous handlers come back afterwards.
    Off the main thread (where Python cannot set handlers) nothing is held."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def hold(signum: int, frame: Any) -> None:
        if not got:  # os.write: sys.stderr may be mid-write in the code interrupted
            with contextlib.suppress(OSError):
                os.write(2, (note + "\n").encode())
        got.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(_libc().prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError, TypeError):
        return False


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    return _prctl(_PR_SET_PDEATHSIG, int(sig))


def become_subreaper(on: bool = True) -> bool:
    return _prctl(_PR_SET_CHILD_SUBREAPER, int(on))


def is_subreaper() -> bool:
    """Whether orphans of this process's descendants are re-parented to it."""
    if not sys.platform.startswith("linux"):
        return False
    flag = ctypes.c_int(0)
    try:
        ok = int(_libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)) == 0
    except (OSError, AttributeError, TypeError):
        return False
    return ok and bool(flag.value)


def make_undumpable() -> bool:
    return _prctl(_PR_SET_DUMPABLE, 0)


def wipe_environ_value(name: str) -> bool:
    """Overwrite ``name``'s value in this process's C environment block with '*'.

    ``os.environ.pop`` only unlinks the variable; the original bytes stay where
    ``/proc/<pid>/environ`` (readable by root and, unless undumpable, by the same
    user) shows them. Call before removing the variable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        env = ctypes.c_void_p.in_dll(_libc(), "environ").value
        if not env:
            return False
        slots = ctypes.cast(env, ctypes.POINTER(ctypes.c_void_p))
        prefix = name.encode() + b"="
        wiped = False
        for i in range(100_000):
            addr = slots[i]
            if not addr:
                break
            entry = ctypes.string_at(addr)
            if entry.startswith(prefix) and len(entry) > len(prefix):
                ctypes.memset(addr + len(prefix), ord("*"), len(entry) - len(prefix))
                wiped = True
        return wiped
    except (OSError, ValueError, AttributeError):
        return False


def wipe_argv_value(secret: str, prefix: str = "", ends: tuple[bytes, ...] = ()) -> bool:
    """Overwrite ``secret`` in this process's original command line with '*', so
    ``/proc/<pid>/cmdline`` (readable by every process) no longer shows it. Python
    keeps its own copy in ``sys.argv``; this wipes the C one.

    With ``prefix`` only an occurrence right after it is wiped (the prefix stays),
    and it must end an argument or be followed by one of ``ends``: the exact text,
    never a matching substring of another argument."""
    raw = secret.encode(errors="surrogateescape")
    head = prefix.encode(errors="surrogateescape")
    if not raw or not sys.platform.startswith("linux"):
        return False
    try:
        stat = Path("/proc/self/stat").read_bytes()
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        if not start or end <= start:
            return False
        area = ctypes.string_at(start, end - start)
        wiped = False
        at = area.find(head + raw)
        while at >= 0:
            after = area[at + len(head) + len(raw) : at + len(head) + len(raw) + 1]
            if not head or after in (b"", b"\0", *ends):
                ctypes.memset(start + at + len(head), ord("*"), len(raw))
                wiped = True
            at = area.find(head + raw, at + len(head) + len(raw))
        return wiped
    except (OSError, ValueError, IndexError):
        return False


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; empty where /proc has no such file)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out += [int(x) for x in text.split()]
    return out


def descendants(pid: int) -> list[int]:
    seen: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += children(p)
    return seen


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(pid: int, include_self: bool = True) -> int:
    """SIGSTOP every descendant (so none forks again), then SIGKILL them all.
    Returns how many processes were signalled."""
    total = 0
    for _ in range(3):  # a process may have forked between the walk and the stop
        procs = descendants(pid)
        if include_self:
            procs.insert(0, pid)
        if not procs:
            break
        for p in procs:
            _signal(p, signal.SIGSTOP)
        for p in procs:
            _signal(p, signal.SIGKILL)
        total += len(procs)
        if include_self:
            break
    return total


def reap_children() -> list[tuple[int, int, float]]:
    """Collect every exited child: ``[(pid, wait status, CPU seconds)]``. The CPU is the
    kernel's count (``wait4``): user + system time of the child and of every descendant
    it waited for. The child cannot report a figure of its own; it can leave work out
    (children it never waits for, or reaped by the kernel under ``SIGCHLD`` ignored)."""
    out: list[tuple[int, int, float]] = []
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status, usage.ru_utime + usage.ru_stime))


# --------------------------------------------------------------------------- environment

#: what every check gets from the coordinator's environment, when set
BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "TERM",
    "VIRTUAL_ENV",
    "PYTHON*",
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "BLIS_*",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_*",
    "NUMBA_*",
    "HARNESS_*",
)

#: never passed, whatever the lists say
NEVER_PASS = ("HARNESS_SIGN_KEY_PASSPHRASE", "HARNESS_SIGN_KEY", "HARNESS_PKCS11_PIN")

_SECRET = re.compile(
    r"(SECRET|TOKEN|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH|SESSION|COOKIE"
    r"|(^|_)KEY$|_PAT$|(^|_)PIN$|SIGNING)",
    re.IGNORECASE,
)


def looks_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def scrubbed_environment(
    environ: Mapping[str, str], pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """The allowlist ``BASE_ENV`` (minus secret-looking ``HARNESS_*`` names) plus the
    names (or patterns) in ``pass_env``; the signing variables never pass."""
    extra = list(pass_env)
    out = {}
    for name, value in environ.items():
        if name in NEVER_PASS:
            continue
        if _matches(name, extra):
            out[name] = value
        elif _matches(name, BASE_ENV) and not (name.startswith("HARNESS_") and looks_secret(name)):
            out[name] = value
    return out


#: the shortest value ``RunRequest.secrets`` redacts: redacting a short value a check was
#: not given is an oracle (it prints every 4-8 digit number; the one that comes back
#: ``[REDACTED]`` is the value)
REDACT_MIN_LENGTH = 12


def secret_values(environ: Mapping[str, str], min_length: int = 6) -> dict[str, str]:
    """``{value: name}`` of every variable whose name looks secret (for redaction)."""
    out = {}
    for name, value in environ.items():
        if (looks_secret(name) or name in NEVER_PASS) and len(value) >= min_length:
            out[value] = name
    return out


def redact(data: bytes, secrets_: Mapping[str, str]) -> bytes:
    """``data`` with every secret value replaced by ``[REDACTED:NAME]``."""
    for value, name in sorted(secrets_.items(), key=lambda kv: -len(kv[0])):
        raw = value.encode(errors="surrogateescape")
        if raw and raw in data:
            data = data.replace(raw, f"[REDACTED:{name}]".encode())
    return data
