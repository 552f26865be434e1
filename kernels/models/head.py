"""The LM head: logits = h @ W.T (W[V, d]) fused with softmax cross-entropy."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import JIT
from ..ops.xent import _xent_fwd_bwd_kernel


@njit(**JIT)
def _lm_head_logits_kernel(h, w):
    return np.dot(h, w.T)


@njit(**JIT)
def _lm_head_loss_grad_into(h, w, targets, logits, dh):
    """Mean loss and a fresh dW; ``logits[N, V]`` is scratch (ends as dlogits), dh[:] = dL/dh."""
    np.dot(h, w.T, logits)
    loss = _xent_fwd_bwd_kernel(logits, targets, logits)
    np.dot(logits, w, dh)
    dw = np.dot(logits.T, h)
    return loss, dw


@njit(**JIT)
def _argmax_first(x):
    """Index of the largest element of a 1-D array, the first on ties; the first NaN if
    there is one (what ``np.argmax`` returns)."""
    best = 0
    m = x[0]
    if m != m:
        return 0
    for j in range(1, x.size):
        v = x[j]
        if v != v:
            return j
        if v > m:
            m = v
            best = j
    return best
