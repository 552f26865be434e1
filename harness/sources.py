"""The project's own source files a check ran with: named by the worker, digested
by the coordinator (issue 14).

After a check returns, its worker names the Python source files loaded in its
process that belong to the project (``loaded_sources``): inside the project root,
but not in a virtual environment, a ``site-packages`` folder or a hidden folder
(``.venv``, ``.git``). The fork server's preloads count too: a module the check
found already imported is one it ran with. That list is untrusted, like
everything a worker sends: the coordinator checks every name (``source_name``),
resolves it inside the project root itself (no symbolic link on the way, a
regular file, not in the evidence folder) and takes each file's sha256 once per
run (``SourceDigests``). The bundle's ``sources.json`` holds the result;
``harness rerun`` and ``harness diff`` compare it (``source_diff``).

A worker forked by the fork server does not read every module object (each read
copies a page it shares with the server): ``warm`` names the preloads once and puts
a meta path finder first that notes each import, and the worker reads only the
modules it imported; one that appeared in ``sys.modules`` otherwise (put there by
hand) makes it read them all.

Only modules imported into the worker's own process are seen: a command check's
process, or a subprocess a check starts, is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SOURCES = 5000  # names one worker may report
MAX_NAME = 4096  # characters of one name
SOURCES_FILE = "sources.json"
SOURCES_VERSION = 1
MAX_DIFF_LINES = 50  # source differences listed one by one
_SKIPPED_PARTS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_SHA256 = re.compile(r"[0-9a-f]{64}")


def source_name(name: object) -> bool:
    """A name a worker may report: a relative POSIX path of a ``.py`` file, with no
    empty, ``.``/``..``, hidden (``.venv``) or ``site-packages`` part, in UTF-8."""
    if not isinstance(name, str) or not name.endswith(".py") or len(name) > MAX_NAME:
        return False
    if "\x00" in name:
        return False
    for part in name.split("/"):
        if not part or part.startswith(".") or part in _SKIPPED_PARTS:
            return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _prefixes() -> list[Path]:
    """The running interpreter's installation folders (a virtualenv inside the project)."""
    seen = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return [Path(os.path.realpath(p)) for p in seen if p]


class _Environments:
    """Whether a folder is inside a Python environment (its ``pyvenv.cfg`` or
    ``conda-meta``, or the running interpreter's prefix), cached by folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefixes = [p for p in _prefixes() if p.is_relative_to(root)]
        self.cache: dict[Path, bool] = {}

    def holds(self, path: Path) -> bool:
        if any(path.is_relative_to(p) for p in self.prefixes):
            return True
        folder = path.parent
        walked = []
        found = False
        while folder != self.root and folder.is_relative_to(self.root):
            if folder in self.cache:
                found = self.cache[folder]
                break
            walked.append(folder)
            if (folder / "pyvenv.cfg").is_file() or (folder / "conda-meta").is_dir():
                found = True
                break
            folder = folder.parent
        for f in walked:
            self.cache[f] = found
        return found


def _relative(root: Path, real: Path, envs: _Environments) -> str | None:
    """``real`` (a resolved path) as a project source name, or None."""
    try:
        name = real.relative_to(root).as_posix()
    except ValueError:
        return None
    if not source_name(name) or envs.holds(real):
        return None
    return name


def loaded_sources(root: str | Path, modules: Mapping[str, Any] | None = None) -> list[str]:
    """The project source files of the modules loaded in this process (``modules``:
    ``sys.modules``): sorted names relative to ``root``, at most ``MAX_SOURCES``."""
    real_root = Path(os.path.realpath(root))
    cache = _NAMES.setdefault(str(real_root), {})
    envs: _Environments | None = None
    found: set[str] = set()
    quick = _imported_since_warm(str(real_root)) if modules is None else None
    if quick is not None:  # a worker of the fork server: what it imported, and the preloads
        candidates, preloaded = quick
        found.update(preloaded)
    else:
        candidates = list((sys.modules if modules is None else modules).values())
    for module in candidates:
        try:
            file = getattr(module, "__file__", None)
        except Exception:  # noqa: BLE001 - a module object may be anything
            continue
        if not isinstance(file, str) or not file.endswith(".py"):
            continue
        if file in cache:
            name = cache[file]
        else:
            envs = envs or _Environments(real_root)
            real = Path(os.path.realpath(os.path.join(real_root, file)))
            name = cache[file] = _relative(real_root, real, envs)
        if name is not None:
            found.add(name)
    return sorted(found)[:MAX_SOURCES]


# module file -> its project name (or None), per project root: the fork server fills it
# for its preloads (``warm``) and every worker it forks inherits it, so a check pays only
# for the modules it imported itself
_NAMES: dict[str, dict[str, str | None]] = {}


class _ImportLog:
    """A meta path finder that finds nothing: it notes the name of every module the
    import system looks for (one not in ``sys.modules`` yet) and lets the next finder
    find it. Installed by ``warm``, so a worker knows what it imported without reading
    every module object the fork server loaded (each read copies a shared page)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        self.names.append(name)


_IMPORTS = _ImportLog()
# real project root -> (sys.modules' names at ``warm``, how many, their project sources)
_WARM: dict[str, tuple[frozenset[str], int, list[str]]] = {}


def warm(root: str | Path) -> None:
    """Name the modules loaded so far (in the fork server, before any fork), and note
    every import from now on."""
    names = loaded_sources(root)
    _WARM[os.path.realpath(root)] = (frozenset(sys.modules), len(sys.modules), names)
    _IMPORTS.names.clear()
    if _IMPORTS not in sys.meta_path:
        sys.meta_path.insert(0, _IMPORTS)


def _imported_since_warm(real_root: str) -> tuple[list[Any], list[str]] | None:
    """The modules imported since ``warm`` and the preloads' source names; None when
    that does not account for ``sys.modules`` (a module put there by hand, not
    imported), or without ``warm``: then every module is read."""
    warmed = _WARM.get(real_root)
    if warmed is None or _IMPORTS not in sys.meta_path:
        return None
    before, count, preloaded = warmed
    new: list[Any] = []
    seen: set[str] = set()
    for name in _IMPORTS.names:
        if name in seen or name in before:
            continue
        seen.add(name)
        module = sys.modules.get(name)
        if module is not None:
            new.append(module)
    if len(sys.modules) != count + len(new):
        return None
    return new, preloaded


def _sha256_regular(path: Path) -> str | None:
    """The sha256 of a regular file, never through a symbolic link (None otherwise)."""
    try:  # O_NONBLOCK: a FIFO in place of a source must not hang the coordinator
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        h = hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


class SourceDigests:
    """The coordinator's sha256 of the source files workers name, each taken once
    per run. A name is digested only if it is a well-formed source name that
    resolves, with no symbolic link on the way, to a regular file inside ``root``,
    outside a Python environment and outside ``exclude`` (the evidence folder)."""

    def __init__(self, root: Path, exclude: Iterable[Path] = ()) -> None:
        self.root = Path(os.path.realpath(root))
        self.exclude = [Path(os.path.realpath(p)) for p in exclude]
        self._envs = _Environments(self.root)
        self._cache: dict[str, str | None] = {}

    def digests(self, names: Iterable[str]) -> dict[str, str]:
        """``{name: sha256}`` of the names that pass (the rest are left out)."""
        out = {}
        for name in names:
            if name not in self._cache:
                try:
                    self._cache[name] = self._digest(name)
                except (OSError, ValueError):  # unreadable, or a name the OS refuses
                    self._cache[name] = None
            digest = self._cache[name]
            if digest is not None:
                out[name] = digest
        return out

    def _digest(self, name: str) -> str | None:
        if not source_name(name):
            return None
        path = self.root / name
        if Path(os.path.realpath(path)) != path:  # a symbolic link on the way
            return None
        if any(path.is_relative_to(e) for e in self.exclude):
            return None
        if _relative(self.root, path, self._envs) != name:
            return None
        return _sha256_regular(path)


def project_sources(root: str | Path, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{name: sha256}`` of every Python source file of the project under ``root``:
    the names ``loaded_sources`` could report (no hidden folder, no ``__pycache__`` or
    ``site-packages``, nothing inside a Python environment), regular files reached
    through no symbolic link, outside the folders ``exclude`` names (relative to
    ``root``: the evidence folder). Every module a binding can import from the
    project root is among them: two checkouts with the same answer run the same
    project code (a Dask worker's and the coordinator's, ``harness.dask_executor``)."""
    real_root = Path(os.path.realpath(root))
    envs = _Environments(real_root)
    skip = {real_root / e for e in exclude}
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in _SKIPPED_PARTS
            and here / d not in skip
            and not (here / d).is_symlink()
            and not envs.holds(here / d / "x.py")
        )
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            name = (here / f).relative_to(real_root).as_posix()
            if not source_name(name):
                continue
            digest = _sha256_regular(here / f)  # a symbolic link or a pipe: None
            if digest is not None:
                out[name] = digest
    return out


# --------------------------------------------------------------------------- recorded


@dataclass(frozen=True)
class RecordedSources:
    """A bundle's ``sources.json``: the digests, and which files each check loaded."""

    files: dict[str, str]  # name -> sha256
    checks: dict[str, list[str]]  # invariant or falsifier ID -> names

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SOURCES_VERSION,
            "files": dict(sorted(self.files.items())),
            "checks": {k: sorted(v) for k, v in sorted(self.checks.items())},
        }


def read_sources(run_dir: Path) -> RecordedSources | None:
    """``run_dir``'s recorded sources; None for a bundle without them (made before
    they were recorded). ValueError says what is wrong with a malformed one."""
    path = run_dir / SOURCES_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{SOURCES_FILE} is unreadable ({str(exc)[:120]})") from None
    if not isinstance(data, dict) or data.get("version") != SOURCES_VERSION:
        raise ValueError(f"{SOURCES_FILE} is not a version {SOURCES_VERSION} object")
    files, checks = data.get("files"), data.get("checks", {})
    if not isinstance(files, dict) or not all(
        source_name(k) and isinstance(v, str) and _SHA256.fullmatch(v) for k, v in files.items()
    ):
        raise ValueError(f"{SOURCES_FILE}: files is not a mapping of source names to sha256")
    if not isinstance(checks, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) and n in files for n in v)
        for v in checks.values()
    ):
        raise ValueError(f"{SOURCES_FILE}: checks is not a mapping of IDs to recorded files")
    return RecordedSources(dict(files), {str(k): list(v) for k, v in checks.items()})


def source_diff(old_dir: Path, new_dir: Path) -> list[str]:
    """The project source files the checks of two runs imported, compared by digest:
    ``source changed: PATH`` per changed file, then the files only one run loaded.
    When both runs recorded which check loaded what, only the checks both ran count
    (a rerun of some criteria loads less)."""
    recorded: list[RecordedSources | None] = []
    for which, run_dir in (("old", old_dir), ("new", new_dir)):
        try:
            recorded.append(read_sources(run_dir))
        except ValueError as exc:
            return [f"sources: the {which} run's {exc}; the source files cannot be compared"]
    a, b = recorded
    if a is None or b is None:
        which = "either run" if a is b else "the old run" if a is None else "the new run"
        return [
            f"sources: not recorded in {which} (a bundle made before source digests); "
            "the source files the checks imported cannot be compared"
        ]
    fa, fb = a.files, b.files
    common = set(a.checks) & set(b.checks)
    if common and set(a.checks) != set(b.checks):
        fa = {n: a.files[n] for k in common for n in a.checks[k]}
        fb = {n: b.files[n] for k in common for n in b.checks[k]}
    lines = [f"source changed: {n}" for n in sorted(set(fa) & set(fb)) if fa[n] != fb[n]]
    lines += [f"source only in the old run: {n}" for n in sorted(set(fa) - set(fb))]
    lines += [f"source only in the new run: {n}" for n in sorted(set(fb) - set(fa))]
    if len(lines) > MAX_DIFF_LINES:
        more = len(lines) - MAX_DIFF_LINES
        lines = [
            *lines[:MAX_DIFF_LINES],
            f"sources: {more} more differences (each run's {SOURCES_FILE} lists its files)",
        ]
    return lines
