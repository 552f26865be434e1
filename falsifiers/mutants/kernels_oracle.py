"""Known-bad variants the transformers oracle must catch (AC-KERN-005, acceptance/oracle.py).

Each is a bug that is consistent in itself: forward and backward agree, so the
finite-difference and NumPy-reference checks of AC-KERN-001 (which share our reading of
the architecture) cannot tell; only an independent implementation can. They replace the
names the models' and the optimizer's *Python* code looks up at call time:

- ``GPT2._block_fwd`` / ``_block_bwd`` / ``_trunk`` read ``_linear_io_gelu_fwd_into``,
  ``_gelu_bwd_kernel`` and ``_layernorm_fwd_into`` from ``kernels.models.gpt2``;
- ``Llama._block_fwd`` / ``_block_bwd`` / ``_trunk`` read ``_rope_kernel`` and
  ``_rmsnorm_fwd_into`` from ``kernels.models.llama``;
- ``AdamW.step`` reads ``_adamw_all_kernel`` from ``kernels.optim`` (one dtype) and
  ``_adamw_kernel`` (mixed dtypes).

Mutants that wrap a real function capture it here, at import (before it is patched).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf

from kernels.models.gpt2 import _layernorm_fwd_into as _gpt2_layernorm_fwd_into
from kernels.models.llama import _rmsnorm_fwd_into as _llama_rmsnorm_fwd_into
from kernels.optim import _adamw_all_kernel, _adamw_kernel

# ----------------------------------------------------------------------------- GPT-2

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def linear_io_gelu_fwd_into_erf(x: Any, w: Any, b: Any, pre: Any, act: Any) -> None:
    """``pre = x @ w + b; act = gelu(pre)`` with the exact erf GELU (``nn.GELU()``'s
    default) where GPT-2 uses the tanh form (``gelu_new``)."""
    np.dot(x, w, out=pre)
    pre += b
    act[:] = 0.5 * pre * (1.0 + erf(pre / _SQRT2))


def gelu_bwd_erf(x: Any, dy: Any, dx: Any) -> None:
    """The backward of the erf GELU: ``dy * (Phi(x) + x phi(x))``."""
    cdf = 0.5 * (1.0 + erf(x / _SQRT2))
    pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI
    dx[:] = dy * (cdf + x * pdf)


EPS_FACTOR = 10.0  # 1e-4 where the config says 1e-5


def layernorm_fwd_into_eps_x10(
    x: Any, w: Any, b: Any, eps: float, y: Any, mean: Any, rstd: Any
) -> None:
    """GPT-2's LayerNorm with an epsilon ten times the config's (1e-4 for 1e-5)."""
    _gpt2_layernorm_fwd_into(x, w, b, eps * EPS_FACTOR, y, mean, rstd)


# ----------------------------------------------------------------------------- Llama


def rope_interleaved(
    x: Any, t_len: int, pos0: int, n_heads: int, hd: int, cos: Any, sin: Any, sign: float
) -> None:
    """Rotary embedding that rotates adjacent pairs ``(x[2j], x[2j+1])`` (the GPT-J /
    original-paper layout) where HF's Llama checkpoints rotate halves
    ``(x[j], x[j + hd/2])``; ``sign=-1`` is the inverse (the backward), as the kernel's."""
    n = x.shape[0]
    half = hd // 2
    pos = pos0 + np.arange(n) % t_len
    c = cos[pos][:, None, :]
    s = sign * sin[pos][:, None, :]
    heads = x[:, : n_heads * hd].reshape(n, n_heads, half, 2)
    a = heads[..., 0].copy()
    b = heads[..., 1].copy()
    out = np.empty_like(heads)
    out[..., 0] = a * c - b * s
    out[..., 1] = b * c + a * s
    x[:, : n_heads * hd] = out.reshape(n, n_heads * hd)


def rmsnorm_fwd_into_eps_x10(x: Any, w: Any, eps: float, y: Any, rstd: Any) -> None:
    """Llama's RMSNorm with an epsilon ten times the config's."""
    _llama_rmsnorm_fwd_into(x, w, eps * EPS_FACTOR, y, rstd)


# ----------------------------------------------------------------------------- AdamW


def adamw_all_decaying_every_tensor(
    ps: Any, gs: Any, ms: Any, vs: Any, wds: Any, lr: float, b1: float, b2: float,
    eps: float, bc1: float, bc2: float, gscale: float,
) -> None:  # fmt: skip
    """AdamW whose decay mask was dropped: biases and norm gains decay like matrices."""
    every = np.full_like(wds, float(np.max(wds)) if len(wds) else 0.0)
    _adamw_all_kernel(ps, gs, ms, vs, every, lr, b1, b2, eps, bc1, bc2, gscale)


def adamw_all_clipping_after_step(
    ps: Any, gs: Any, ms: Any, vs: Any, wds: Any, lr: float, b1: float, b2: float,
    eps: float, bc1: float, bc2: float, gscale: float,
) -> None:  # fmt: skip
    """The step uses the unclipped gradients and clips them afterwards (the order of
    ``optimizer.step()`` and ``clip_grad_norm_`` swapped). Loops over the real per-tensor
    kernel: the real ``_adamw_all_kernel``, compiled on a cold numba cache while
    ``_adamw_kernel`` is patched too, would crash instead of computing the bug."""
    for k in range(len(ps)):
        _adamw_kernel(ps[k], gs[k], ms[k], vs[k], lr, b1, b2, eps, wds[k], bc1, bc2, 1.0)
    for g in gs:
        g *= g.dtype.type(gscale)


def adamw_clipping_after_step(
    p: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float, eps: float, wd: float,
    bc1: float, bc2: float, gscale: float,
) -> None:  # fmt: skip
    """The per-tensor kernel, clipping after the update."""
    _adamw_kernel(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2, 1.0)
    g *= g.dtype.type(gscale)
