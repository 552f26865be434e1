"""Argument checks shared by the public kernel wrappers (no numba here)."""

from __future__ import annotations

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(name: str, a: object, ndim: int | None = None, dtype=None) -> np.ndarray:
    """Return ``a`` if it is a C-contiguous float32/float64 array of ``ndim`` dims."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (got {type(a).__name__})")
    if a.dtype not in FLOATS:
        raise ValueError(f"{name} must be float32 or float64 (got {a.dtype})")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(
            f"{name} must have dtype {np.dtype(dtype)} like the other inputs (got {a.dtype})"
        )
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D (got shape {a.shape})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return a


def check_int(name: str, a: object, ndim: int, upper: int | None = None) -> np.ndarray:
    """Return ``a`` as a C-contiguous int32/int64 array with values in [0, upper)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy integer array (got {type(a).__name__})")
    if a.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise ValueError(f"{name} must be int32 or int64 (got {a.dtype})")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D (got shape {a.shape})")
    if upper is not None and a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} values must lie in [0, {upper}) (got min {lo}, max {hi})")
    return np.ascontiguousarray(a)


def check_shape(name: str, a: np.ndarray, shape: tuple) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (got {a.shape})")


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (got {eps})")
    return eps
