"""What the run ran on: versions, CPU, BLAS, threads, git state, dependency digest."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
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


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_distributions() -> dict[str, str]:
    """``{name: version}`` of the installed distributions (names lower-cased), and
    ``python``: the interpreter's version."""
    pins = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
    pins["python"] = sys.version.split()[0]
    return dict(sorted(pins.items()))


def dependency_digest() -> str:
    pins = sorted(
        f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()
    )
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


def cpu_info() -> dict[str, Any]:
    out: dict[str, Any] = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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


def collect_environment(root: Path) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "cpu": cpu_info(),
        "blas": blas_info(),
        "threads": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "git": git_state(root),
        "dependency_digest": dependency_digest(),
    }
