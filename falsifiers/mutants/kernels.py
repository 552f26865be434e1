"""Known-bad variants of the numba core's kernels and inference (contracts/kernels.yaml).

Where they are patched in, and why there: an ``@njit`` caller compiles its callees
in, so a mutant replaces the name a *Python* caller looks up at call time:

- the public wrappers in kernels/ops (``cross_entropy_rows`` reads
  ``kernels.ops.xent:_xent_rows_kernel``, ``causal_attention`` reads
  ``kernels.ops.attention:_attn_fwd_kernel``, ``layernorm_backward`` reads
  ``kernels.ops.norms:_layernorm_bwd_kernel``);
- ``AdamW.step`` reads ``kernels.optim:_adamw_all_kernel`` / ``_adamw_kernel``;
- the models' Python forward (``GPT2._block_fwd`` / ``Llama._block_fwd``, ``_trunk``)
  reads ``_attn_fwd_into``, ``_layernorm_fwd_into`` and ``_rmsnorm_fwd_into`` from
  ``kernels.models.gpt2`` / ``kernels.models.llama``;
- KV-cached decoding goes through the method ``forward_step`` of each model class;
- the server's prompt handling is ``kernels.serving:prompt_ids``.

Mutants that wrap a real function capture it here, at import: the worker imports a
mutant before patching it in, so these names hold the unpatched originals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernels.models.gpt2 import GPT2
from kernels.models.gpt2 import _layernorm_fwd_into as _gpt2_layernorm_fwd_into
from kernels.models.llama import Llama
from kernels.models.llama import _rmsnorm_fwd_into as _llama_rmsnorm_fwd_into
from kernels.ops.norms import _layernorm_bwd_kernel
from kernels.optim import _adamw_kernel

_gpt2_forward_step = GPT2.forward_step
_llama_forward_step = Llama.forward_step

# ----------------------------------------------------------------------------- softmax


def xent_rows_without_max(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy whose log-sum-exp does not subtract the row max first:
    exp overflows once logits pass ~88 (float32) or ~709 (float64)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(logits)
        lse = np.log(e.sum(axis=1, dtype=np.float64))
        return lse - logits[np.arange(logits.shape[0]), targets].astype(np.float64)


def xent_fwd_bwd_without_max(logits: np.ndarray, targets: np.ndarray, dlogits: np.ndarray) -> float:
    """Mean cross-entropy and its gradient, without the max subtraction."""
    n = logits.shape[0]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rows = xent_rows_without_max(logits, targets)
        e = np.exp(logits.astype(np.float64))
        dlogits[:] = e / e.sum(axis=1, keepdims=True) / n
    dlogits[np.arange(n), targets] -= 1.0 / n
    return float(rows.mean())


def _np_attention(
    qkv: np.ndarray, bsz: int, t_len: int, n_head: int, *, peek: int = 0, subtract_max: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Attention on packed qkv[B*T, 3C] in NumPy; row i sees keys j <= i + peek."""
    c = qkv.shape[1] // 3
    hd = c // n_head
    x = qkv.reshape(bsz, t_len, 3, n_head, hd).transpose(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
    q, k, v = x[0], x[1], x[2]
    s = (q @ k.transpose(0, 1, 3, 2)) * qkv.dtype.type(1.0 / math.sqrt(hd))
    allowed = np.tril(np.ones((t_len, t_len), dtype=bool), peek)
    with np.errstate(over="ignore", invalid="ignore"):
        if subtract_max:
            s = s - np.where(allowed, s, -np.inf).max(-1, keepdims=True)
        e = np.where(allowed, np.exp(s), 0.0).astype(qkv.dtype)
        p = e / e.sum(-1, keepdims=True)
    out = (p @ v).transpose(0, 2, 1, 3).reshape(bsz * t_len, c).astype(qkv.dtype)
    return out, np.ascontiguousarray(p, dtype=qkv.dtype)


def attn_fwd_without_max(qkv: np.ndarray, bsz: int, t_len: int, n_head: int) -> Any:
    """``_attn_fwd_kernel`` whose softmax does not subtract the row max (overflows)."""
    return _np_attention(qkv, bsz, t_len, n_head, subtract_max=False)


def attn_fwd_sees_next(qkv: np.ndarray, bsz: int, t_len: int, n_head: int) -> Any:
    """``_attn_fwd_kernel`` whose causal mask is off by one: position t sees t + 1."""
    return _np_attention(qkv, bsz, t_len, n_head, peek=1)


def attn_fwd_into_sees_next(
    qkv: np.ndarray, bsz: int, t_len: int, n_head: int, out: np.ndarray, probs: np.ndarray
) -> None:
    """The models' ``_attn_fwd_into`` with the off-by-one causal mask."""
    o, p = _np_attention(qkv, bsz, t_len, n_head, peek=1)
    out[:] = o
    probs[:] = p


# ----------------------------------------------------------------------------- optimizer


def adamw_all_without_bias_correction(
    ps: Any, gs: Any, ms: Any, vs: Any, wds: Any, lr: float, b1: float, b2: float,
    eps: float, bc1: float, bc2: float, gscale: float,
) -> None:  # fmt: skip
    """AdamW that forgets the bias correction of its moments (bc1 = bc2 = 1).

    Loops in Python over the real per-tensor kernel captured at import: calling the real
    ``_adamw_all_kernel`` would compile it, on a cold numba cache, against the patched
    (Python) ``_adamw_kernel`` global and crash instead of computing the bug."""
    for k in range(len(ps)):
        _adamw_kernel(ps[k], gs[k], ms[k], vs[k], lr, b1, b2, eps, wds[k], 1.0, 1.0, gscale)


def adamw_without_bias_correction(
    p: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float, eps: float, wd: float,
    bc1: float, bc2: float, gscale: float,
) -> None:  # fmt: skip
    """The per-tensor AdamW kernel without bias correction."""
    _adamw_kernel(p, g, m, v, lr, b1, b2, eps, wd, 1.0, 1.0, gscale)


# ----------------------------------------------------------------------------- backward


def layernorm_bwd_mean_as_constant(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray, mean: np.ndarray, rstd: np.ndarray
) -> Any:
    """LayerNorm backward that treats the row mean as a constant (drops its term)."""
    dx, dw, db = _layernorm_bwd_kernel(dy, x, w, mean, rstd)
    g = dy * w
    return dx + rstd[:, None] * g.mean(axis=1, keepdims=True), dw, db


# ----------------------------------------------------------------------------- engine

WRONG_EPS = 1e-3  # the configs say 1e-5


def layernorm_fwd_into_wrong_eps(
    x: Any, w: Any, b: Any, eps: float, y: Any, mean: Any, rstd: Any
) -> None:
    """GPT-2's LayerNorm with a hard-coded epsilon of 1e-3 instead of the config's."""
    _gpt2_layernorm_fwd_into(x, w, b, WRONG_EPS, y, mean, rstd)


def rmsnorm_fwd_into_wrong_eps(x: Any, w: Any, eps: float, y: Any, rstd: Any) -> None:
    """Llama's RMSNorm with a hard-coded epsilon of 1e-3 instead of the config's."""
    _llama_rmsnorm_fwd_into(x, w, WRONG_EPS, y, rstd)


CACHE_WINDOW = 8


def _dropping_oldest(orig: Any) -> Any:
    def forward_step(self: Any, params: dict, token: Any, cache: Any, *, check: bool = True) -> Any:
        """A KV cache that holds CACHE_WINDOW positions and, when full, evicts its oldest
        entry (shifting the rest down and rewinding the position)."""
        if cache.pos >= CACHE_WINDOW:
            for a in (cache.k, cache.v):
                a[:, :, :, : CACHE_WINDOW - 1] = a[:, :, :, 1:CACHE_WINDOW].copy()
            cache.pos = CACHE_WINDOW - 1
        return orig(self, params, token, cache, check=check)

    return forward_step


def _off_by_one(orig: Any) -> Any:
    def forward_step(self: Any, params: dict, token: Any, cache: Any, *, check: bool = True) -> Any:
        """Cached decoding whose positions count from 1: token t is embedded, rotated and
        stored at position t + 1 (slot 0 stays empty but is attended to)."""
        cache.pos += 1
        try:
            return orig(self, params, token, cache, check=check)
        finally:
            cache.pos -= 1

    return forward_step


gpt2_step_dropping_oldest = _dropping_oldest(_gpt2_forward_step)
llama_step_dropping_oldest = _dropping_oldest(_llama_forward_step)
gpt2_step_off_by_one = _off_by_one(_gpt2_forward_step)
llama_step_off_by_one = _off_by_one(_llama_forward_step)


# ----------------------------------------------------------------------------- serving


def prompt_ids_without_truncation(tok: Any, prompt: Any, n_ctx: int) -> np.ndarray:
    """Prompt handling that forgets to cut a long prompt to the context window."""
    return tok.encode(prompt or "\n")
