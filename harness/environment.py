"""What the run ran on: versions, CPU, BLAS, threads, git state, dependency digest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "numpy",
    "numba",
    "llvmlite",
    "pyyaml",
    "jsonschema",
    "hypothesis",
    "click",
    "safetensors",
    "cryptography",
    "pytest",
)
ENV_PREFIXES = ("NUMBA_", "OMP_", "OPENBLAS_", "MKL_", "PYTHONHASHSEED")


def git_state(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # untracked files count: a contract or check file git does not track changes the run
    status = git("status", "--porcelain", "--untracked-files=normal")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def uncommitted_sources(root: Path, commit: str, files: Mapping[str, str]) -> list[str]:
    """The files of ``files`` (project-relative path -> the sha256 the run recorded) whose
    bytes are not the commit's: changed since they were read, different from the blob at
    ``commit`` (a change git status does not show: skip-worktree, assume-unchanged), or
    not in the commit at all (an ignored or untracked file a check imported)."""
    paths = sorted(files)
    if not paths:
        return []
    try:
        proc = subprocess.run(
            ["git", "ls-tree", "-r", "-z", commit, "--", *paths],
            cwd=root, capture_output=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ["(git ls-tree failed)"]
    if proc.returncode != 0:
        return [f"(git ls-tree failed: {proc.stderr.decode(errors='replace').strip()[:200]})"]
    blobs: dict[str, str] = {}
    for entry in proc.stdout.split(b"\0"):
        if b"\t" in entry:
            info, name = entry.split(b"\t", 1)
            blobs[name.decode(errors="replace")] = info.split()[-1].decode()
    out = []
    for rel in paths:
        try:
            data = (root / rel).read_bytes()
        except OSError:
            out.append(f"{rel} (gone)")
            continue
        if hashlib.sha256(data).hexdigest() != files[rel]:
            out.append(f"{rel} (changed during the run)")
        elif rel not in blobs:
            out.append(f"{rel} (not in the commit)")
        elif (
            hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
            != blobs[rel]
        ):
            out.append(f"{rel} (differs from the commit)")
    return out


def _git_blob_id(data: bytes) -> str:
    """The object id git gives ``data`` as a blob (sha1 of ``blob <size>\\0`` + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_distributions() -> dict[str, str]:
    """``{name: version}`` of the installed distributions (names lower-cased), and
    ``python``: the interpreter's version."""
    pins = dict(_name_version(d) for d in metadata.distributions())
    pins["python"] = sys.version.split()[0]
    return dict(sorted(pins.items()))


def dependency_digest() -> str:
    pins = sorted(
        f"{name}=={version}" for name, version in map(_name_version, metadata.distributions())
    )
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


def _name_version(dist: metadata.Distribution) -> tuple[str, str]:
    """A distribution's lower-cased name and its version, read from its metadata's
    headers alone: ``dist.metadata`` parses the whole file (the long description too)
    with the email parser, for every distribution, twice (~1 ms each)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in found:
            found[key] = value.strip()
    return found.get("Name", "").lower(), found.get("Version", "")


def usable_cores() -> int | None:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container given 2 CPUs of a 64-core host has 2); None when unknown."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError, ZeroDivisionError):
        pass
    return cores or None


def cpu_info(imports: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not imports:
        return out
    try:
        import llvmlite.binding as llvm

        out["numba_cpu_name"] = llvm.get_host_cpu_name()
        out["numba_cpu_features"] = llvm.get_host_cpu_features().flatten()
    except Exception as exc:  # recorded, not fatal: the environment is informational
        out["numba_cpu_error"] = str(exc)
    return out


def blas_info() -> dict[str, Any]:
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {}) if isinstance(cfg, dict) else {}
        return {k: deps.get(k) for k in ("blas", "lapack")}
    except Exception as exc:
        return {"error": str(exc)}


def interpreter_environment(imports: bool = True) -> dict[str, Any]:
    """The parts that cost imports (NumPy, llvmlite) and a scan of every installed
    distribution: ~0.2 s, which ``EnvironmentProbe`` spends in a process of its own.
    ``imports=False``: only what reading files gives (no BLAS, no LLVM CPU name), for a
    process that must not import code checks could have rewritten (the coordinator)."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "cpu": cpu_info(imports),
        "blas": blas_info() if imports else {"error": "not collected"},
        "dependency_digest": dependency_digest(),
    }


def local_environment(root: Path) -> dict[str, Any]:
    """The parts read from this process and the checkout: thread settings, git state."""
    return {
        "threads": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "git": git_state(root),
    }


def collect_environment(root: Path) -> dict[str, Any]:
    return {**interpreter_environment(), **local_environment(root)}


PROBE_TIMEOUT = 120.0  # seconds for the probe's imports on a cold, busy machine
PROBE_MAX_OUTPUT = 1024**2  # bytes of JSON taken from the probe (it prints ~3 KB)


class EnvironmentProbe:
    """``interpreter_environment()`` of this interpreter, collected by a child process
    while the caller starts services and the fork server; ``result()`` waits for it, and
    the runner has it wait before the first check, so no check runs beside it. The probe
    is this file run as a script by this executable, with nothing of the current folder
    or of ``harness/`` on its path (``-P``), in the scrubbed environment checks get (no
    secret of the coordinator's), in a session of its own (a Ctrl-C at the terminal is
    the coordinator's), non-dumpable before it imports NumPy or llvmlite. If it fails,
    what needs no import is collected here (the coordinator imports nothing once checks
    may run: they could rewrite NumPy's files), with the probe's error noted."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        env = probe_environment(os.environ)
        # a process that runs the harness more than once (a library caller, a check that
        # runs the harness) probes once per interpreter and environment
        self.key = (sys.executable, tuple(sorted(env.items())))
        if self.key in _PROBED:
            return
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", str(Path(__file__).resolve())],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            self.error = f"the environment probe did not start: {exc}"

    def result(self, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
        if self.error is None and self.proc is None and self.key in _PROBED:
            return json.loads(_PROBED[self.key])  # a copy of what this process probed
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.error = f"the environment probe took longer than {timeout:g} s"
            else:
                data = _parse_probe(out) if proc.returncode == 0 else None
                if data is not None:
                    _PROBED[self.key] = json.dumps(data)
                    return data
                tail = err.decode(errors="replace").strip().splitlines()[-1:]
                self.error = (f"the environment probe ended ({proc.returncode}) without a "
                              f"record (killed with an interrupted run?): {tail}")  # fmt: skip
            finally:  # also on a Ctrl-C while waiting: the probe goes with it
                _end(proc)
        return {**interpreter_environment(imports=False), "probe_error": self.error}

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _end(proc)


# (interpreter, probe environment) -> the probe's record (JSON), once a probe answered
_PROBED: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

KEYS = ("python", "implementation", "platform", "packages", "cpu", "blas", "dependency_digest")


def _parse_probe(out: bytes) -> dict[str, Any] | None:
    """The probe's record: one JSON object of the known keys, or None."""
    if len(out) > PROBE_MAX_OUTPUT:
        return None
    try:
        data = json.loads(out)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or set(data) != set(KEYS):
        return None
    return {k: data[k] for k in KEYS}


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def probe_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The probe's environment: what a check gets (``scrubbed_environment``)."""
    from harness.procs import scrubbed_environment

    return scrubbed_environment(environ)


def probe_main() -> None:
    """The probe process: non-dumpable (``PR_SET_DUMPABLE`` 0) before NumPy or llvmlite
    is imported, then one JSON line."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, as harness.procs.make_undumpable
    print(json.dumps(interpreter_environment(), sort_keys=True, default=str))


if __name__ == "__main__":  # the probe: python -P harness/environment.py
    probe_main()
