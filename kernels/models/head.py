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
