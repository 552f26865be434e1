"""Linear layers: ``y = x @ W (+ b) (+ residual)`` through BLAS, bias fused.

Two weight layouts, as real checkpoints store them:
- "io": ``W[in, out]`` (GPT-2's Conv1D), ``y = x @ W``;
- "oi": ``W[out, in]`` (torch ``nn.Linear``, Llama), ``y = x @ W.T``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_float, check_shape


@njit(**JIT)
def _linear_io_fwd_into(x, w, b, y):
    """y[:] = x @ w + b."""
    np.dot(x, w, y)
    n, m = y.shape
    for i in range(n):
        yi = y[i]
        for j in range(m):
            yi[j] += b[j]


@njit(**JIT)
def _linear_io_fwd_kernel(x, w, b):
    y = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    _linear_io_fwd_into(x, w, b, y)
    return y


@njit(**JIT)
def _linear_io_res_fwd_into(x, w, b, res, y):
    """y[:] = res + x @ w + b (y must not alias res)."""
    np.dot(x, w, y)
    n, m = y.shape
    for i in range(n):
        yi = y[i]
        ri = res[i]
        for j in range(m):
            yi[j] += b[j] + ri[j]


@njit(**JIT)
def _linear_io_res_fwd_kernel(x, w, b, res):
    """``res + x @ w + b`` in one pass over the output."""
    y = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    _linear_io_res_fwd_into(x, w, b, res, y)
    return y


@njit(**JIT)
def _linear_oi_fwd_into(x, w, y):
    np.dot(x, w.T, y)


@njit(**JIT)
def _linear_oi_fwd_kernel(x, w):
    return np.dot(x, w.T)


@njit(**JIT)
def _linear_oi_res_fwd_into(x, w, res, y):
    """y[:] = res + x @ w.T (y must not alias res)."""
    np.dot(x, w.T, y)
    n, m = y.shape
    for i in range(n):
        yi = y[i]
        ri = res[i]
        for j in range(m):
            yi[j] += ri[j]


@njit(**JIT)
def _linear_oi_res_fwd_kernel(x, w, res):
    y = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    _linear_oi_res_fwd_into(x, w, res, y)
    return y


@njit(**JIT)
def _colsum_kernel(dy):
    n, m = dy.shape
    db = np.zeros(m, dtype=dy.dtype)
    for i in range(n):
        di = dy[i]
        for j in range(m):
            db[j] += di[j]
    return db


@njit(**JIT)
def _linear_io_bwd_into(x, w, dy, dx):
    """dx[:] = dy @ w.T; return fresh ``(dw, db)`` for ``y = x @ w + b``."""
    np.dot(dy, w.T, dx)
    dw = np.dot(x.T, dy)
    db = _colsum_kernel(dy)
    return dw, db


@njit(**JIT)
def _linear_io_bwd_kernel(x, w, dy):
    """Return ``(dx, dw, db)`` for ``y = x @ w + b``."""
    dx = np.empty_like(x)
    dw, db = _linear_io_bwd_into(x, w, dy, dx)
    return dx, dw, db


@njit(**JIT)
def _linear_oi_bwd_into(x, w, dy, dx):
    """dx[:] = dy @ w; return a fresh dw for ``y = x @ w.T``."""
    np.dot(dy, w, dx)
    return np.dot(dy.T, x)


@njit(**JIT)
def _linear_oi_bwd_kernel(x, w, dy):
    """Return ``(dx, dw)`` for ``y = x @ w.T``."""
    dx = np.empty_like(x)
    dw = _linear_oi_bwd_into(x, w, dy, dx)
    return dx, dw


def _check(x, w, b, layout):
    x = check_float("x", x, 2)
    w = check_float("w", w, 2, x.dtype)
    if layout not in ("io", "oi"):
        raise ValueError(f"layout must be 'io' or 'oi' (got {layout!r})")
    n_in = w.shape[0] if layout == "io" else w.shape[1]
    n_out = w.shape[1] if layout == "io" else w.shape[0]
    if x.shape[1] != n_in:
        raise ValueError(f"x has {x.shape[1]} features but w ({layout}) expects {n_in}")
    if b is not None:
        b = check_float("b", b, 1, x.dtype)
        check_shape("b", b, (n_out,))
    return n_out


def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, layout: str = "io"
) -> np.ndarray:
    """Forward ``x @ W + b`` for x[N, in]; see module doc for ``layout``."""
    n_out = _check(x, w, b, layout)
    if b is None:
        b = np.zeros(n_out, dtype=x.dtype)
    if layout == "io":
        return _linear_io_fwd_kernel(x, w, b)
    y = _linear_oi_fwd_kernel(x, w)
    y += b
    return y


def linear_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray, layout: str = "io"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(dx, dw, db)`` given the upstream gradient ``dy[N, out]``."""
    n_out = _check(x, w, None, layout)
    dy = check_float("dy", dy, 2, x.dtype)
    check_shape("dy", dy, (x.shape[0], n_out))
    if layout == "io":
        return _linear_io_bwd_kernel(x, w, dy)
    dx, dw = _linear_oi_bwd_kernel(x, w, dy)
    return dx, dw, _colsum_kernel(dy)


@njit(**JIT)
def _add_inplace_kernel(a, b):
    """a += b for arrays of the same shape (C-contiguous)."""
    fa = a.ravel()
    fb = b.ravel()
    for i in range(fa.size):
        fa[i] += fb[i]
