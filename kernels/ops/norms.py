"""LayerNorm and RMSNorm over the last axis of x[N, d], forward and backward."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_eps, check_float, check_shape


@njit(**JIT)
def _layernorm_fwd_kernel(x, w, b, eps):
    """Return ``(y, mean[N], rstd[N])``; two-pass mean/variance per row."""
    y = np.empty_like(x)
    mean = np.empty(x.shape[0], dtype=x.dtype)
    rstd = np.empty(x.shape[0], dtype=x.dtype)
    _layernorm_fwd_into(x, w, b, eps, y, mean, rstd)
    return y, mean, rstd


@njit(**JIT)
def _layernorm_fwd_into(x, w, b, eps, y, mean, rstd):
    n, d = x.shape
    for i in range(n):
        xi = x[i]
        s = 0.0
        for j in range(d):
            s += xi[j]
        m = s / d
        v = 0.0
        for j in range(d):
            c = xi[j] - m
            v += c * c
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
        s1 = 0.0
        s2 = 0.0
        for j in range(d):
            xh = (xi[j] - m) * r
            gj = dyi[j] * w[j]
            xhat[j] = xh
            g[j] = gj
            s1 += gj
            s2 += gj * xh
            dw[j] += dyi[j] * xh
            db[j] += dyi[j]
        a = xi.dtype.type(s1 / d)
        c = xi.dtype.type(s2 / d)
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
        v = 0.0
        for j in range(d):
            v += xi[j] * xi[j]
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
    for i in range(n):
        xi = x[i]
        dyi = dy[i]
        r = rstd[i]
        s = 0.0
        for j in range(d):
            xh = xi[j] * r
            gj = dyi[j] * w[j]
            s += gj * xh
            dw[j] += dyi[j] * xh
        c = xi.dtype.type(s / d)
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
