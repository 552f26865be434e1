"""Token embedding (optionally plus learned positions), forward and backward."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_float, check_int, check_shape


@njit(**JIT)
def _embed_fwd_kernel(wte, tokens):
    """tokens[B, T] -> x[B*T, d] = wte[tokens]."""
    x = np.empty((tokens.size, wte.shape[1]), dtype=wte.dtype)
    _embed_fwd_into(wte, tokens, x)
    return x


@njit(**JIT)
def _embed_fwd_into(wte, tokens, x):
    bsz, t_len = tokens.shape
    d = wte.shape[1]
    for b in range(bsz):
        for t in range(t_len):
            row = wte[tokens[b, t]]
            out = x[b * t_len + t]
            for j in range(d):
                out[j] = row[j]


@njit(**JIT)
def _embed_pos_fwd_kernel(wte, wpe, tokens, pos0):
    """x[b*T + t] = wte[tokens[b, t]] + wpe[pos0 + t]."""
    x = np.empty((tokens.size, wte.shape[1]), dtype=wte.dtype)
    _embed_pos_fwd_into(wte, wpe, tokens, pos0, x)
    return x


@njit(**JIT)
def _embed_pos_fwd_into(wte, wpe, tokens, pos0, x):
    bsz, t_len = tokens.shape
    d = wte.shape[1]
    for b in range(bsz):
        for t in range(t_len):
            row = wte[tokens[b, t]]
            prow = wpe[pos0 + t]
            out = x[b * t_len + t]
            for j in range(d):
                out[j] = row[j] + prow[j]


@njit(**JIT)
def _embed_bwd_kernel(tokens, dx, dwte):
    """Accumulate dx rows into dwte[tokens] (in place; sequential, deterministic)."""
    bsz, t_len = tokens.shape
    d = dwte.shape[1]
    for b in range(bsz):
        for t in range(t_len):
            g = dx[b * t_len + t]
            dst = dwte[tokens[b, t]]
            for j in range(d):
                dst[j] += g[j]


@njit(**JIT)
def _pos_bwd_kernel(t_len, dx, dwpe):
    """Accumulate dx rows into dwpe[t] (positions 0..T-1, in place)."""
    n, d = dx.shape
    for r in range(n):
        g = dx[r]
        dst = dwpe[r % t_len]
        for j in range(d):
            dst[j] += g[j]


def embedding(
    weight: np.ndarray, tokens: np.ndarray, positions: np.ndarray | None = None
) -> np.ndarray:
    """Look up ``weight[tokens]`` (tokens[B, T]) and optionally add ``positions[:T]``.

    Returns x[B*T, d].
    """
    weight = check_float("weight", weight, 2)
    tokens = check_int("tokens", tokens, 2, upper=weight.shape[0])
    if positions is None:
        return _embed_fwd_kernel(weight, tokens)
    positions = check_float("positions", positions, 2, weight.dtype)
    if positions.shape[1] != weight.shape[1]:
        raise ValueError(
            f"positions must have {weight.shape[1]} columns (got {positions.shape[1]})"
        )
    if tokens.shape[1] > positions.shape[0]:
        raise ValueError(
            f"sequence length {tokens.shape[1]} exceeds the {positions.shape[0]} learned positions"
        )
    return _embed_pos_fwd_kernel(weight, positions, tokens, 0)


def embedding_backward(
    tokens: np.ndarray, dx: np.ndarray, vocab_size: int, n_positions: int | None = None
):
    """Gradients of :func:`embedding`: ``dweight`` or ``(dweight, dpositions)``."""
    tokens = check_int("tokens", tokens, 2, upper=vocab_size)
    dx = check_float("dx", dx, 2)
    check_shape("dx", dx, (tokens.size, dx.shape[1]))
    dw = np.zeros((vocab_size, dx.shape[1]), dtype=dx.dtype)
    _embed_bwd_kernel(tokens, dx, dw)
    if n_positions is None:
        return dw
    if tokens.shape[1] > n_positions:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds {n_positions} positions")
    dp = np.zeros((n_positions, dx.shape[1]), dtype=dx.dtype)
    _pos_bwd_kernel(tokens.shape[1], dx, dp)
    return dw, dp
