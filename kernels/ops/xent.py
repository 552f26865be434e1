"""Softmax cross-entropy over logits[N, V] with integer targets[N].

Stable: every row subtracts its max before ``exp``; the log-sum-exp is
accumulated in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_float, check_int
from .fastexp import _exp_inplace, _max, _sum_f64


@njit(**JIT)
def _rowmax(x):
    """Largest element of a non-empty 1-D array, 8 running maxima (vectorizes; no heap
    array, so a short row of causal attention costs no allocation).

    Not NaN-propagating by itself; callers feed ``x - max`` to exp and sum, and a
    NaN anywhere in the row still makes the sum (so the loss and the row's
    gradient) NaN.
    """
    n = x.size
    n8 = n - n % 8
    if n8 == 0:
        return _max(x)
    a0, a1, a2, a3, a4, a5, a6, a7 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
    for j in range(8, n8, 8):
        v = x[j]
        a0 = v if v > a0 else a0
        v = x[j + 1]
        a1 = v if v > a1 else a1
        v = x[j + 2]
        a2 = v if v > a2 else a2
        v = x[j + 3]
        a3 = v if v > a3 else a3
        v = x[j + 4]
        a4 = v if v > a4 else a4
        v = x[j + 5]
        a5 = v if v > a5 else a5
        v = x[j + 6]
        a6 = v if v > a6 else a6
        v = x[j + 7]
        a7 = v if v > a7 else a7
    a0 = a1 if a1 > a0 else a0
    a2 = a3 if a3 > a2 else a2
    a4 = a5 if a5 > a4 else a4
    a6 = a7 if a7 > a6 else a6
    a0 = a2 if a2 > a0 else a0
    a4 = a6 if a6 > a4 else a4
    m = a4 if a4 > a0 else a0
    for j in range(n8, n):
        v = x[j]
        if v > m:
            m = v
    return m


@njit(**JIT)
def _xent_rows_kernel(logits, targets):
    """Per-row losses ``logsumexp(logits[i]) - logits[i, targets[i]]`` (float64)."""
    n, v = logits.shape
    losses = np.empty(n, dtype=np.float64)
    buf = np.empty(v, dtype=logits.dtype)
    kbuf = np.empty(v, dtype=np.int32)
    for i in range(n):
        row = logits[i]
        m = _max(row)
        for j in range(v):
            buf[j] = row[j] - m
        _exp_inplace(buf, kbuf)
        losses[i] = m + math.log(_sum_f64(buf)) - row[targets[i]]
    return losses


@njit(**JIT)
def _xent_fwd_bwd_kernel(logits, targets, dlogits):
    """Mean loss; writes ``d(mean loss)/d logits`` into dlogits (may alias logits)."""
    n, v = logits.shape
    inv_n = 1.0 / n
    total = 0.0
    kbuf = np.empty(v, dtype=np.int32)
    for i in range(n):
        row = logits[i]
        drow = dlogits[i]
        tgt = targets[i]
        x_t = row[tgt]
        m = _rowmax(row)
        for j in range(v):
            drow[j] = row[j] - m
        _exp_inplace(drow, kbuf)
        tot = _sum_f64(drow)
        total += m + math.log(tot) - x_t
        scale = drow.dtype.type(inv_n / tot)
        for j in range(v):
            drow[j] *= scale
        drow[tgt] -= inv_n
    return total * inv_n


def _check(logits, targets):
    logits = check_float("logits", logits, 2)
    targets = check_int("targets", targets, 1, upper=logits.shape[1])
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must have {logits.shape[0]} entries (got {targets.shape[0]})")
    if logits.shape[0] == 0:
        raise ValueError("logits must have at least one row")
    return logits, targets


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits[N, V] against targets[N]."""
    logits, targets = _check(logits, targets)
    return float(_xent_rows_kernel(logits, targets).mean())


def cross_entropy_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy (float64[N])."""
    logits, targets = _check(logits, targets)
    return _xent_rows_kernel(logits, targets)


def cross_entropy_backward(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Return ``(mean loss, dlogits)``; logits is not modified."""
    logits, targets = _check(logits, targets)
    dlogits = np.empty_like(logits)
    loss = _xent_fwd_bwd_kernel(logits, targets, dlogits)
    return float(loss), dlogits
