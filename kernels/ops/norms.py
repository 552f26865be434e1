"""LayerNorm and RMSNorm over the last axis of x[N, d], forward and backward."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_eps, check_float, check_shape
from .fastexp import _sum_f64


@njit(**JIT)
def _layernorm_fwd_kernel(x, w, b, eps):
    """Return ``(y, mean[N], rstd[N])``; two-pass mean/variance per row."""
    y = np.empty_like(x)
    mean = np.empty(x.shape[0], dtype=x.dtype)
    rstd = np.empty(x.shape[0], dtype=x.dtype)
    _layernorm_fwd_into(x, w, b, eps, y, mean, rstd)
    return y, mean, rstd


@njit(**JIT)
def _dot8(x, y):
    """float64 sum of x[j] * y[j] (products in float64) with 8 interleaved accumulators."""
    n = x.size
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, n8, 8):
        a0 += np.float64(x[j]) * y[j]
        a1 += np.float64(x[j + 1]) * y[j + 1]
        a2 += np.float64(x[j + 2]) * y[j + 2]
        a3 += np.float64(x[j + 3]) * y[j + 3]
        a4 += np.float64(x[j + 4]) * y[j + 4]
        a5 += np.float64(x[j + 5]) * y[j + 5]
        a6 += np.float64(x[j + 6]) * y[j + 6]
        a7 += np.float64(x[j + 7]) * y[j + 7]
    for j in range(n8, n):
        a0 += np.float64(x[j]) * y[j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(**JIT)
def _sqdev8(x, m):
    """float64 sum of (x[j] - m)^2 with 8 interleaved accumulators."""
    n = x.size
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, n8, 8):
        c0 = x[j] - m
        c1 = x[j + 1] - m
        c2 = x[j + 2] - m
        c3 = x[j + 3] - m
        c4 = x[j + 4] - m
        c5 = x[j + 5] - m
        c6 = x[j + 6] - m
        c7 = x[j + 7] - m
        a0 += c0 * c0
        a1 += c1 * c1
        a2 += c2 * c2
        a3 += c3 * c3
        a4 += c4 * c4
        a5 += c5 * c5
        a6 += c6 * c6
        a7 += c7 * c7
    for j in range(n8, n):
        c = x[j] - m
        a0 += c * c
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(**JIT)
def _layernorm_fwd_into(x, w, b, eps, y, mean, rstd):
    n, d = x.shape
    for i in range(n):
        xi = x[i]
        m = _sum_f64(xi) / d
        v = _sqdev8(xi, m)
        r = 1.0 / math.sqrt(v / d + eps)
        mean[i] = m
        rstd[i] = r
        yi = y[i]
        mf = xi.dtype.type(m)
        rf = xi.dtype.type(r)
        for j in range(d):
            yi[j] = (xi[j] - mf) * rf * w[j] + b[j]


@njit(**JIT)
def _layernorm_bwd_kernel(dy, x, w, mean, rstd):
    """Return ``(dx, dw, db)``."""
    dx = np.empty_like(x)
    dw, db = _layernorm_bwd_into(dy, x, w, mean, rstd, dx)
    return dx, dw, db


@njit(**JIT)
def _layernorm_bwd_into(dy, x, w, mean, rstd, dx):
    """dx[:] = the input gradient; return fresh ``(dw, db)``. dx may alias dy."""
    n, d = x.shape
    dw = np.zeros(d, dtype=x.dtype)
    db = np.zeros(d, dtype=x.dtype)
    xhat = np.empty(d, dtype=x.dtype)
    g = np.empty(d, dtype=x.dtype)
    for i in range(n):
        xi = x[i]
        dyi = dy[i]
        m = mean[i]
        r = rstd[i]
        for j in range(d):
            xh = (xi[j] - m) * r
            dyj = dyi[j]
            xhat[j] = xh
            g[j] = dyj * w[j]
            dw[j] += dyj * xh
            db[j] += dyj
        a = xi.dtype.type(_sum_f64(g) / d)
        c = xi.dtype.type(_dot8(g, xhat) / d)
        dxi = dx[i]
        for j in range(d):
            dxi[j] = r * (g[j] - a - xhat[j] * c)
    return dw, db


@njit(**JIT)
def _rmsnorm_fwd_kernel(x, w, eps):
    """Return ``(y, rstd[N])`` with ``y = x / sqrt(mean(x^2) + eps) * w``."""
    y = np.empty_like(x)
    rstd = np.empty(x.shape[0], dtype=x.dtype)
    _rmsnorm_fwd_into(x, w, eps, y, rstd)
    return y, rstd


@njit(**JIT)
def _rmsnorm_fwd_into(x, w, eps, y, rstd):
    n, d = x.shape
    for i in range(n):
        xi = x[i]
        v = _dot8(xi, xi)
        r = 1.0 / math.sqrt(v / d + eps)
        rstd[i] = r
        rf = xi.dtype.type(r)
        yi = y[i]
        for j in range(d):
            yi[j] = xi[j] * rf * w[j]


@njit(**JIT)
def _rmsnorm_bwd_kernel(dy, x, w, rstd):
    """Return ``(dx, dw)``."""
    dx = np.empty_like(x)
    dw = _rmsnorm_bwd_into(dy, x, w, rstd, dx)
    return dx, dw


@njit(**JIT)
def _rmsnorm_bwd_into(dy, x, w, rstd, dx):
    """dx[:] = the input gradient; return a fresh dw. dx may alias dy."""
    n, d = x.shape
    dw = np.zeros(d, dtype=x.dtype)
    xhat = np.empty(d, dtype=x.dtype)
    g = np.empty(d, dtype=x.dtype)
    for i in range(n):
        xi = x[i]
        dyi = dy[i]
        r = rstd[i]
        for j in range(d):
            xh = xi[j] * r
            gj = dyi[j] * w[j]
            xhat[j] = xh
            g[j] = gj
            dw[j] += dyi[j] * xh
        c = xi.dtype.type(_dot8(g, xhat) / d)
        dxi = dx[i]
        for j in range(d):
            dxi[j] = r * (dyi[j] * w[j] - xi[j] * r * c)
    return dw


def _check_xw(x, w, name="w"):
    x = check_float("x", x, 2)
    w = check_float(name, w, 1, x.dtype)
    check_shape(name, w, (x.shape[1],))
    return x, w


def layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5):
    """LayerNorm of x[N, d]; returns ``(y, mean, rstd)`` (the last two for backward)."""
    x, w = _check_xw(x, w)
    _, b = _check_xw(x, b, "b")
    return _layernorm_fwd_kernel(x, w, b, check_eps(eps))


def layernorm_backward(dy, x, w, mean, rstd):
    """Return ``(dx, dw, db)`` of :func:`layernorm`."""
    x, w = _check_xw(x, w)
    dy = check_float("dy", dy, 2, x.dtype)
    check_shape("dy", dy, x.shape)
    for name, a in (("mean", mean), ("rstd", rstd)):
        check_float(name, a, 1, x.dtype)
        check_shape(name, a, (x.shape[0],))
    return _layernorm_bwd_kernel(dy, x, w, mean, rstd)


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float = 1e-5):
    """RMSNorm of x[N, d]; returns ``(y, rstd)``."""
    x, w = _check_xw(x, w)
    return _rmsnorm_fwd_kernel(x, w, check_eps(eps))


def rmsnorm_backward(dy, x, w, rstd):
    """Return ``(dx, dw)`` of :func:`rmsnorm`."""
    x, w = _check_xw(x, w)
    dy = check_float("dy", dy, 2, x.dtype)
    check_shape("dy", dy, x.shape)
    check_float("rstd", rstd, 1, x.dtype)
    check_shape("rstd", rstd, (x.shape[0],))
    return _rmsnorm_bwd_kernel(dy, x, w, rstd)
