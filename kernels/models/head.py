"""The LM head: logits = h @ W.T (W[V, d]) fused with softmax cross-entropy."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import JIT
from ..ops.xent import _mean_loss_kernel, _xent_rows_grad_into
from .base import split_rows


@njit(**JIT)
def _lm_head_logits_kernel(h, w):
    return np.dot(h, w.T)


@njit(**JIT)
def _lm_head_logits_into(h, w, logits):
    np.dot(h, w.T, logits)


@njit(**JIT)
def _lm_head_bwd_into(h, w, dlogits, dh):
    """dh[:] = dlogits @ w; return a fresh dW = dlogits.T @ h."""
    np.dot(dlogits, w, dh)
    return np.dot(dlogits.T, h)


def _lm_head_loss_grad_into(h, w, targets, logits, dh):
    """Mean loss and a fresh dW; ``logits[N, V]`` is scratch (ends as dlogits), dh[:] = dL/dh.

    The cross-entropy rows run on two threads when allowed (per-row losses are
    summed in row order afterwards, so the bits do not depend on the split).
    """
    _lm_head_logits_into(h, w, logits)
    n = logits.shape[0]
    inv_n = 1.0 / n
    losses = np.empty(n, dtype=np.float64)
    split_rows(_xent_rows_grad_into, (logits, targets, logits, inv_n, losses), (0, 1, 2, 4))
    loss = _mean_loss_kernel(losses, inv_n)
    dw = _lm_head_bwd_into(h, w, logits, dh)
    return loss, dw
