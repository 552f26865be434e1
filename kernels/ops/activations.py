"""GELU (tanh form, as GPT-2), SiLU and SwiGLU, forward and backward.

Elementwise kernels work on arrays of any shape through a flat view.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_float, check_shape
from .fastexp import _exp_inplace

_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


_CHUNK = 2048


@njit(**JIT)
def _gelu_fwd_kernel(x, y):
    """y = gelu(x), both flat 1-D.

    Uses ``0.5 (1 + tanh(u)) = sigmoid(2u)``: ``gelu(x) = x / (1 + exp(-2u))``,
    with the vectorized exp; |x| > 10 saturates to x or 0.
    """
    t = x.dtype.type
    k2 = t(-2.0 * _GELU_K)
    c = t(_GELU_C)
    one = t(1.0)
    lim = t(10.0)
    n = x.size
    kbuf = np.empty(_CHUNK, dtype=np.int32)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        xs = x[start : start + m]
        ys = y[start : start + m]
        for i in range(m):
            v = min(max(xs[i], -lim), lim)
            ys[i] = k2 * (v + c * v * v * v)
        _exp_inplace(ys, kbuf)
        for i in range(m):
            v = xs[i]
            s = one / (one + ys[i])
            if v > lim:
                s = one
            if v < -lim:
                s = one - one
            ys[i] = v * s


@njit(**JIT)
def _gelu_bwd_kernel(x, dy, dx):
    """dx = dy * gelu'(x), all flat 1-D (may not alias)."""
    t = x.dtype.type
    k = t(_GELU_K)
    k2 = t(-2.0 * _GELU_K)
    c = t(_GELU_C)
    c3 = t(3.0 * _GELU_C)
    one = t(1.0)
    two = t(2.0)
    lim = t(10.0)
    n = x.size
    kbuf = np.empty(_CHUNK, dtype=np.int32)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        xs = x[start : start + m]
        dys = dy[start : start + m]
        dxs = dx[start : start + m]
        for i in range(m):
            v = min(max(xs[i], -lim), lim)
            dxs[i] = k2 * (v + c * v * v * v)
        _exp_inplace(dxs, kbuf)
        for i in range(m):
            v = xs[i]
            vc = min(max(v, -lim), lim)
            s = one / (one + dxs[i])
            if v > lim:
                s = one
            if v < -lim:
                s = one - one
            dxs[i] = dys[i] * (s + v * s * (one - s) * two * k * (one + c3 * vc * vc))


@njit(**JIT)
def _linear_io_gelu_fwd_into(x, w, b, pre, act):
    """pre[:] = x @ w + b; act[:] = gelu(pre)."""
    np.dot(x, w, pre)
    n, m = pre.shape
    for i in range(n):
        pi = pre[i]
        for j in range(m):
            pi[j] += b[j]
    _gelu_fwd_kernel(pre.ravel(), act.ravel())


@njit(**JIT)
def _linear_io_gelu_fwd_kernel(x, w, b):
    """Return ``(pre, act)`` with ``pre = x @ w + b`` and ``act = gelu(pre)``."""
    pre = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    act = np.empty_like(pre)
    _linear_io_gelu_fwd_into(x, w, b, pre, act)
    return pre, act


@njit(**JIT)
def _sigmoid_into(x, s, kbuf):
    """s = sigmoid(x) for flat arrays (s may not alias x); exact 0 below -80."""
    t = x.dtype.type
    one = t(1.0)
    lim = t(80.0)
    n = x.size
    for i in range(n):
        s[i] = -x[i]
    _exp_inplace(s, kbuf)
    for i in range(n):
        v = one / (one + s[i])
        if x[i] < -lim:
            v = one - one
        s[i] = v


@njit(**JIT)
def _silu_fwd_kernel(x, y):
    kbuf = np.empty(x.size, dtype=np.int32)
    _sigmoid_into(x, y, kbuf)
    for i in range(x.size):
        y[i] = x[i] * y[i]


@njit(**JIT)
def _silu_bwd_kernel(x, dy, dx):
    kbuf = np.empty(x.size, dtype=np.int32)
    _sigmoid_into(x, dx, kbuf)
    one = x.dtype.type(1.0)
    for i in range(x.size):
        s = dx[i]
        dx[i] = dy[i] * s * (one + x[i] * (one - s))


@njit(**JIT)
def _swiglu_fwd_kernel(gu, f):
    """gu[N, 2F] = [gate | up] -> h[N, F] = silu(gate) * up."""
    h = np.empty((gu.shape[0], f), dtype=gu.dtype)
    _swiglu_fwd_into(gu, f, h)
    return h


@njit(**JIT)
def _swiglu_fwd_into(gu, f, h):
    n = gu.shape[0]
    kbuf = np.empty(f, dtype=np.int32)
    for i in range(n):
        row = gu[i]
        g = row[:f]
        u = row[f:]
        out = h[i]
        _sigmoid_into(g, out, kbuf)
        for j in range(f):
            out[j] = g[j] * out[j] * u[j]


@njit(**JIT)
def _swiglu_bwd_kernel(gu, dh):
    """Return dgu[N, 2F] given dh[N, F]."""
    dgu = np.empty_like(gu)
    _swiglu_bwd_into(gu, dh, dgu)
    return dgu


@njit(**JIT)
def _swiglu_bwd_into(gu, dh, dgu):
    n, f = dh.shape
    kbuf = np.empty(f, dtype=np.int32)
    one = gu.dtype.type(1.0)
    for i in range(n):
        row = gu[i]
        g = row[:f]
        u = row[f:]
        dhi = dh[i]
        dg = dgu[i, :f]
        du = dgu[i, f:]
        _sigmoid_into(g, dg, kbuf)
        for j in range(f):
            s = dg[j]
            gs = g[j] * s
            du[j] = dhi[j] * gs
            dg[j] = dhi[j] * u[j] * s * (one + g[j] * (one - s))


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (GPT-2's ``gelu_new``)."""
    x = check_float("x", x)
    y = np.empty_like(x)
    _gelu_fwd_kernel(x.reshape(-1), y.reshape(-1))
    return y


def gelu_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    x = check_float("x", x)
    dy = check_float("dy", dy, x.ndim, x.dtype)
    check_shape("dy", dy, x.shape)
    dx = np.empty_like(x)
    _gelu_bwd_kernel(x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
    return dx


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU ``x * sigmoid(x)`` (overflow-free sigmoid)."""
    x = check_float("x", x)
    y = np.empty_like(x)
    _silu_fwd_kernel(x.reshape(-1), y.reshape(-1))
    return y


def silu_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    x = check_float("x", x)
    dy = check_float("dy", dy, x.ndim, x.dtype)
    check_shape("dy", dy, x.shape)
    dx = np.empty_like(x)
    _silu_bwd_kernel(x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
    return dx


def _check_gu(gate, up):
    gate = check_float("gate", gate, 2)
    up = check_float("up", up, 2, gate.dtype)
    check_shape("up", up, gate.shape)
    return np.concatenate([gate, up], axis=1)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """SwiGLU ``silu(gate) * up`` for gate, up [N, F]."""
    gu = _check_gu(gate, up)
    return _swiglu_fwd_kernel(gu, gate.shape[1])


def swiglu_backward(gate: np.ndarray, up: np.ndarray, dh: np.ndarray):
    """Return ``(dgate, dup)``."""
    gu = _check_gu(gate, up)
    dh = check_float("dh", dh, 2, gate.dtype)
    check_shape("dh", dh, gate.shape)
    dgu = _swiglu_bwd_kernel(gu, dh)
    f = gate.shape[1]
    return np.ascontiguousarray(dgu[:, :f]), np.ascontiguousarray(dgu[:, f:])
