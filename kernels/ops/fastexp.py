"""A vectorizable ``exp`` for float32 arrays (numba has no SIMD ``exp`` without SVML).

Cephes' expf: ``exp(x) = 2^n * p(r)``, ``n = round(x / ln 2)``, ``r = x - n ln 2``
split in two constants, ``p`` a degree-5 minimax polynomial (about 1 ulp).
Pure arithmetic in a first loop (which LLVM vectorizes), then ``n`` is added
to the exponent bits through an int32 view. Inputs are clamped to
``[-87, 88]``, so ``exp`` of very negative numbers gives about 1.6e-38, not 0.
float64 arrays use ``math.exp`` (exact; used by the finite-difference tests).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT

_LO = np.float32(-87.0)
_HI = np.float32(88.0)
_LOG2E = np.float32(1.44269504088896341)
_HALF = np.float32(0.5)
_C1 = np.float32(0.693359375)
_C2 = np.float32(-2.12194440e-4)
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)
_ONE = np.float32(1.0)


@njit(**JIT)
def _exp_inplace(x, kbuf):
    """x[:] = exp(x[:]) for a 1-D contiguous array; kbuf: int32 scratch, len >= x.size."""
    n = x.size
    if x.itemsize == 8:
        for i in range(n):
            x[i] = math.exp(x[i])
        return
    for i in range(n):
        v = x[i]
        if v < _LO:
            v = _LO
        if v > _HI:
            v = _HI
        kf = np.floor(v * _LOG2E + _HALF)
        r = v - kf * _C1 - kf * _C2
        z = r * r
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        x[i] = p * z + r + _ONE
        kbuf[i] = np.int32(kf)
    bits = x.view(np.int32)
    for i in range(n):
        bits[i] += kbuf[i] << 23


def exp(x: np.ndarray) -> np.ndarray:
    """Elementwise exp of a float32/float64 array (returns a new array)."""
    y = np.array(x, copy=True, order="C")
    if y.dtype not in (np.float32, np.float64):
        raise ValueError(f"x must be float32 or float64 (got {y.dtype})")
    _exp_inplace(y.reshape(-1), np.empty(y.size, dtype=np.int32))
    return y


@njit(**JIT)
def _sum_f64(x):
    """Sum of a 1-D array in float64 with 8 interleaved accumulators (fixed order)."""
    n = x.size
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, n8, 8):
        a0 += x[j]
        a1 += x[j + 1]
        a2 += x[j + 2]
        a3 += x[j + 3]
        a4 += x[j + 4]
        a5 += x[j + 5]
        a6 += x[j + 6]
        a7 += x[j + 7]
    for j in range(n8, n):
        a0 += x[j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(**JIT)
def _max(x):
    """Largest element of a non-empty 1-D array (NaN-propagating)."""
    m = x[0]
    for j in range(x.size):
        v = x[j]
        if v > m or v != v:
            m = v
    return m
