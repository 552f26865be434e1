"""Plain NumPy references for every kernel in kernels/ops and kernels/optim.

Written the obvious way, independent of the kernels, computed in float64.
"""

from __future__ import annotations

import numpy as np

# The references themselves live in the package so that the shipped contracts'
# checks (acceptance/kernels.py) judge the kernels against the very same code.
from acceptance.kernel_references import (  # noqa: E402,F401
    adamw_step,
    causal_attention,
    cross_entropy_rows,
    embedding,
    f64,
    gelu,
    layernorm,
    linear,
    rmsnorm,
    rope,
    sigmoid,
    silu,
    softmax,
    swiglu,
)


def cross_entropy(logits, targets):
    return float(cross_entropy_rows(logits, targets).mean())


def cross_entropy_grad(logits, targets):
    p = softmax(logits)
    p[np.arange(p.shape[0]), targets] -= 1.0
    return p / p.shape[0]


def numgrad(f, x, h=1e-6):
    """Central differences of the scalar f() w.r.t. every entry of x (modified in place)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g
