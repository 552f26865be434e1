"""Rotary position embedding (the "rotate half" layout used by Llama checkpoints).

For a head vector ``x`` of size ``hd`` (``h = hd // 2``) at position ``p``:
``y[j] = x[j] cos(p w_j) - x[j+h] sin(p w_j)``,
``y[j+h] = x[j+h] cos(p w_j) + x[j] sin(p w_j)``, ``w_j = theta^(-2j/hd)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_float, check_shape


def rope_tables(
    n_pos: int, head_dim: int, theta: float = 10000.0, dtype=np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cos, sin)`` of shape [n_pos, head_dim // 2], computed in float64."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embedding (got {head_dim})")
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(n_pos, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


@njit(**JIT)
def _rope_kernel(x, t_len, pos0, n_heads, hd, cos, sin, sign):
    """Rotate heads 0..n_heads-1 of x[N, >= n_heads*hd] in place.

    Row r sits at position ``pos0 + r % t_len``; ``sign=-1`` applies the inverse
    rotation (the backward pass).
    """
    half = hd // 2
    n = x.shape[0]
    for r in range(n):
        p = pos0 + r % t_len
        c = cos[p]
        s = sin[p]
        row = x[r]
        for h in range(n_heads):
            base = h * hd
            a = row[base : base + half]
            b = row[base + half : base + hd]
            for j in range(half):
                aj = a[j]
                bj = b[j]
                sj = sign * s[j]
                a[j] = aj * c[j] - bj * sj
                b[j] = bj * c[j] + aj * sj


def _check(x, n_head, cos, sin, pos0):
    x = check_float("x", x, 3)
    cos = check_float("cos", cos, 2, x.dtype)
    sin = check_float("sin", sin, 2, x.dtype)
    check_shape("sin", sin, cos.shape)
    if n_head < 1 or x.shape[2] % n_head:
        raise ValueError(f"x's last axis ({x.shape[2]}) must split into n_head={n_head} heads")
    hd = x.shape[2] // n_head
    if cos.shape[1] * 2 != hd:
        raise ValueError(f"tables have {cos.shape[1]} frequencies, head_dim {hd} needs {hd // 2}")
    if pos0 < 0 or pos0 + x.shape[1] > cos.shape[0]:
        raise ValueError(
            f"positions {pos0}..{pos0 + x.shape[1] - 1} exceed the "
            f"{cos.shape[0]} positions in the tables"
        )
    return x, cos, sin, hd


def rope(x: np.ndarray, n_head: int, cos: np.ndarray, sin: np.ndarray, pos0: int = 0) -> np.ndarray:
    """Rotate x[B, T, n_head*hd] (positions pos0..pos0+T-1); returns a new array."""
    x, cos, sin, hd = _check(x, n_head, cos, sin, pos0)
    y = x.reshape(-1, x.shape[2]).copy()
    _rope_kernel(y, x.shape[1], pos0, n_head, hd, cos, sin, 1.0)
    return y.reshape(x.shape)


def rope_backward(
    dy: np.ndarray, n_head: int, cos: np.ndarray, sin: np.ndarray, pos0: int = 0
) -> np.ndarray:
    """Gradient of :func:`rope` (the inverse rotation applied to ``dy``)."""
    dy, cos, sin, hd = _check(dy, n_head, cos, sin, pos0)
    dx = dy.reshape(-1, dy.shape[2]).copy()
    _rope_kernel(dx, dy.shape[1], pos0, n_head, hd, cos, sin, -1.0)
    return dx.reshape(dy.shape)
