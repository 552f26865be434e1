"""kernels._blas: numba gets SciPy's BLAS without the whole scipy.linalg package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fresh(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (what a training child or a service is)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERNELS_AUDIT_LOG": str(tmp_path / "a.jsonl")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_importing_the_core_loads_cython_blas_alone_and_scipy_linalg_still_works(tmp_path):
    code = """
import sys
import kernels
assert "scipy.linalg.cython_blas" in sys.modules and "scipy.linalg" not in sys.modules
import numpy as np
from kernels.ops.linear import linear
x = np.random.default_rng(0).random((33, 17)).astype(np.float32)
w = np.random.default_rng(1).random((17, 9)).astype(np.float32)
y = linear(x, w, None)  # np.dot in compiled code: numba found its BLAS
assert np.allclose(y, x @ w, rtol=1e-5), abs(y - x @ w).max()
assert "scipy.linalg" not in sys.modules, "numba imported the whole package"
import importlib.util
assert importlib.util.find_spec("scipy.linalg") is not None  # looked up, not imported
assert "scipy.linalg" not in sys.modules
import scipy.linalg  # later, as anyone would: the package, with its submodule attribute
finders = [f for f in sys.meta_path if type(f).__name__ == "_AttachOnImport"]
assert len(finders) == 1 and finders[0].blas is None  # quiet now, never removed
assert type(scipy.linalg.__spec__.loader).__name__ == "SourceFileLoader"
assert scipy.linalg.__loader__ is scipy.linalg.__spec__.loader
import importlib.resources
assert importlib.resources.files("scipy.linalg").joinpath("__init__.py").is_file()
assert scipy.linalg.cython_blas is sys.modules["scipy.linalg.cython_blas"]
import scipy.linalg.cython_blas as blas
assert blas is scipy.linalg.cython_blas and "dgemm" in blas.__pyx_capi__
assert np.allclose(scipy.linalg.svd(np.diag([3.0, 2.0]))[1], [3.0, 2.0])
"""
    proc = fresh(code, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_with_scipy_linalg_imported_first_or_no_scipy_it_does_nothing(tmp_path):
    code = """
import sys
import scipy.linalg
from kernels._blas import load_cython_blas
assert load_cython_blas() is False
sys.modules["scipy"] = None  # SciPy missing: numba would say so itself
del sys.modules["scipy.linalg.cython_blas"], sys.modules["scipy.linalg"]
assert load_cython_blas() is False and "scipy.linalg.cython_blas" not in sys.modules
"""
    proc = fresh(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
