"""GPT-2 family: LayerNorm, GELU MLP, learned positions, LM head tied to wte.

Weights use GPT-2's Conv1D layout ``W[in, out]`` (``y = x @ W + b``), with the
tensor names of real GPT-2 checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ..ops.activations import _gelu_bwd_kernel, _gelu_fwd_kernel, _linear_io_gelu_fwd_into
from ..ops.attention import _attn_bwd_into, _attn_fwd_into, _attn_step_kernel
from ..ops.embedding import (
    _embed_bwd_kernel,
    _embed_pos_fwd_into,
    _embed_pos_fwd_kernel,
    _pos_bwd_kernel,
)
from ..ops.linear import (
    _add_inplace_kernel,
    _linear_io_bwd_into,
    _linear_io_fwd_into,
    _linear_io_fwd_kernel,
    _linear_io_res_fwd_into,
    _linear_io_res_fwd_kernel,
)
from ..ops.norms import _layernorm_bwd_into, _layernorm_fwd_into, _layernorm_fwd_kernel
from .base import KVCache, TransformerBase
from .head import _argmax_first, _lm_head_logits_kernel, _lm_head_loss_grad_into

_LAYER_TENSORS = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)


@njit(**JIT)
def _block_step_kernel(
    x, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wp, bp, kc, vc, pos, n_head, eps
):
    """One block for one new position per sequence (x[B, d]) with a KV cache."""
    h1, _, _ = _layernorm_fwd_kernel(x, ln1w, ln1b, eps)
    qkv = _linear_io_fwd_kernel(h1, wqkv, bqkv)
    att = _attn_step_kernel(qkv, kc, vc, pos, n_head)
    x2 = _linear_io_res_fwd_kernel(att, wo, bo, x)
    h2, _, _ = _layernorm_fwd_kernel(x2, ln2w, ln2b, eps)
    pre = _linear_io_fwd_kernel(h2, wfc, bfc)
    act = np.empty_like(pre)
    _gelu_fwd_kernel(pre.ravel(), act.ravel())
    return _linear_io_res_fwd_kernel(act, wp, bp, x2)


@njit(**JIT)
def _decode_step_kernel(
    tokens, pos, wte, wpe, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wp, bp,
    lnfw, lnfb, kcache, vcache, n_head, eps,
):  # fmt: skip
    """The whole model for one new token per sequence; per-layer tensors come as tuples."""
    x = _embed_pos_fwd_kernel(wte, wpe, tokens, pos)
    for i in range(len(ln1w)):
        x = _block_step_kernel(
            x, ln1w[i], ln1b[i], wqkv[i], bqkv[i], wo[i], bo[i], ln2w[i], ln2b[i], wfc[i],
            bfc[i], wp[i], bp[i], kcache[i], vcache[i], pos, n_head, eps,
        )  # fmt: skip
    hf, _, _ = _layernorm_fwd_kernel(x, lnfw, lnfb, eps)
    return _lm_head_logits_kernel(hf, wte)


@njit(**JIT)
def _greedy_kernel(
    out, t0, wte, wpe, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wp, bp,
    lnfw, lnfb, kcache, vcache, n_head, eps,
):  # fmt: skip
    """Greedy decoding in one call (``GPT2.decode_greedy``), GPT-2's step."""
    bsz, total = out.shape
    tok = np.empty((bsz, 1), dtype=np.int32)
    logits = np.empty((bsz, wte.shape[0]), dtype=wte.dtype)
    for pos in range(total - 1):
        if pos >= t0:  # chosen from the logits of the step before
            for b in range(bsz):
                out[b, pos] = _argmax_first(logits[b])
        for b in range(bsz):
            tok[b, 0] = out[b, pos]
        logits = _decode_step_kernel(
            tok, pos, wte, wpe, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wp, bp,
            lnfw, lnfb, kcache, vcache, n_head, eps,
        )  # fmt: skip
    for b in range(bsz):
        out[b, total - 1] = _argmax_first(logits[b])


class GPT2(TransformerBase):
    """GPT-2: ``build_model(ModelConfig(family="gpt2", ...))``."""

    family = "gpt2"

    def param_shapes(self) -> dict[str, tuple]:
        c = self.config
        d, f = c.d_model, c.d_ff
        shapes: dict[str, tuple] = {
            "transformer.wte.weight": (c.vocab_size, d),
            "transformer.wpe.weight": (c.n_ctx, d),
        }
        per_layer = {
            "ln_1.weight": (d,),
            "ln_1.bias": (d,),
            "attn.c_attn.weight": (d, 3 * d),
            "attn.c_attn.bias": (3 * d,),
            "attn.c_proj.weight": (d, d),
            "attn.c_proj.bias": (d,),
            "ln_2.weight": (d,),
            "ln_2.bias": (d,),
            "mlp.c_fc.weight": (d, f),
            "mlp.c_fc.bias": (f,),
            "mlp.c_proj.weight": (f, d),
            "mlp.c_proj.bias": (d,),
        }
        for i in range(c.n_layer):
            for suffix in _LAYER_TENSORS:
                shapes[f"transformer.h.{i}.{suffix}"] = per_layer[suffix]
        shapes["transformer.ln_f.weight"] = (d,)
        shapes["transformer.ln_f.bias"] = (d,)
        return shapes

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 L)."""
        std = self.config.init_std
        proj_std = std / math.sqrt(2 * self.config.n_layer)

        def kind(name: str):
            if name.endswith(".bias"):
                return "zeros"
            if ".ln_" in name:
                return "ones"
            if name.endswith("c_proj.weight"):
                return proj_std
            return std

        return self._init(seed, kind)

    def _layer(self, params, i):
        return tuple(params[f"transformer.h.{i}.{s}"] for s in _LAYER_TENSORS)

    def _block_fwd(self, ws, i, x, p, bsz, t_len):
        """Block i on x[N, d]; returns the output and what backward needs."""
        cfg = self.config
        ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wp, bp = p
        n, d = x.shape
        dt = x.dtype
        k = f"{i}."
        h1, m1, r1 = ws(k + "h1", (n, d), dt), ws(k + "m1", (n,), dt), ws(k + "r1", (n,), dt)
        _layernorm_fwd_into(x, ln1w, ln1b, cfg.eps, h1, m1, r1)
        qkv = ws(k + "qkv", (n, 3 * d), dt)
        _linear_io_fwd_into(h1, wqkv, bqkv, qkv)
        att = ws(k + "att", (n, d), dt)
        probs = ws(k + "probs", (bsz, cfg.n_head, t_len, t_len), dt)
        _attn_fwd_into(qkv, bsz, t_len, cfg.n_head, att, probs)
        x2 = ws(k + "x2", (n, d), dt)
        _linear_io_res_fwd_into(att, wo, bo, x, x2)
        h2, m2, r2 = ws(k + "h2", (n, d), dt), ws(k + "m2", (n,), dt), ws(k + "r2", (n,), dt)
        _layernorm_fwd_into(x2, ln2w, ln2b, cfg.eps, h2, m2, r2)
        pre, act = ws(k + "pre", (n, cfg.d_ff), dt), ws(k + "act", (n, cfg.d_ff), dt)
        _linear_io_gelu_fwd_into(h2, wfc, bfc, pre, act)
        x3 = ws(k + "x3", (n, d), dt)
        _linear_io_res_fwd_into(act, wp, bp, x2, x3)
        return x3, (x, h1, m1, r1, qkv, att, probs, x2, h2, m2, r2, pre, act)

    def _block_bwd(self, ws, dx, saved, p, bsz, t_len):
        """Backward of block: dx (gradient of its output) becomes that of its input.

        Returns the 12 tensor gradients in _LAYER_TENSORS order.
        """
        cfg = self.config
        x, h1, m1, r1, qkv, att, probs, x2, h2, m2, r2, pre, act = saved
        ln1w, _, wqkv, _, wo, _, ln2w, _, wfc, _, wp, _ = p
        n, d = x.shape
        dt = x.dtype
        dact = ws("dact", (n, cfg.d_ff), dt)
        dwp, dbp = _linear_io_bwd_into(act, wp, dx, dact)
        dpre = ws("dpre", (n, cfg.d_ff), dt)
        _gelu_bwd_kernel(pre.reshape(-1), dact.reshape(-1), dpre.reshape(-1))
        dh2 = ws("dh2", (n, d), dt)
        dwfc, dbfc = _linear_io_bwd_into(h2, wfc, dpre, dh2)
        dx2 = ws("dx2", (n, d), dt)
        dln2w, dln2b = _layernorm_bwd_into(dh2, x2, ln2w, m2, r2, dx2)
        _add_inplace_kernel(dx2, dx)
        datt = ws("datt", (n, d), dt)
        dwo, dbo = _linear_io_bwd_into(att, wo, dx2, datt)
        dqkv = ws("dqkv", (n, 3 * d), dt)
        _attn_bwd_into(datt, qkv, probs, bsz, t_len, cfg.n_head, dqkv)
        dh1 = ws("dh1", (n, d), dt)
        dwqkv, dbqkv = _linear_io_bwd_into(h1, wqkv, dqkv, dh1)
        dln1w, dln1b = _layernorm_bwd_into(dh1, x, ln1w, m1, r1, dx)
        _add_inplace_kernel(dx, dx2)
        return (dln1w, dln1b, dwqkv, dbqkv, dwo, dbo, dln2w, dln2b, dwfc, dbfc, dwp, dbp)

    def _trunk(self, params, inp):
        cfg = self.config
        ws = self.workspace()
        bsz, t_len = inp.shape
        wte = params["transformer.wte.weight"]
        n, d, dt = inp.size, cfg.d_model, wte.dtype
        x = ws("x0", (n, d), dt)
        _embed_pos_fwd_into(wte, params["transformer.wpe.weight"], inp, 0, x)
        saved = []
        for i in range(cfg.n_layer):
            x, s = self._block_fwd(ws, i, x, self._layer(params, i), bsz, t_len)
            saved.append(s)
        hf, mf, rf = ws("hf", (n, d), dt), ws("mf", (n,), dt), ws("rf", (n,), dt)
        _layernorm_fwd_into(
            x,
            params["transformer.ln_f.weight"],
            params["transformer.ln_f.bias"],
            cfg.eps,
            hf,
            mf,
            rf,
        )
        return x, hf, mf, rf, saved

    def forward(self, params: dict, tokens: np.ndarray) -> np.ndarray:
        """Logits float[B, T, V] for tokens int[B, T]."""
        self.check_params(params)
        tokens = self.check_tokens(tokens)
        _, hf, _, _, _ = self._trunk(params, tokens)
        logits = _lm_head_logits_kernel(hf, params["transformer.wte.weight"])
        return logits.reshape(tokens.shape[0], tokens.shape[1], -1)

    def loss_and_grads(self, params: dict, tokens: np.ndarray) -> tuple[float, dict]:
        """Mean next-token cross-entropy of tokens int[B, T+1] and its exact gradients."""
        self.check_params(params)
        inp, tgt = self.split_batch(tokens)
        cfg = self.config
        ws = self.workspace()
        bsz, t_len = inp.shape
        wte = params["transformer.wte.weight"]
        n, d, dt = inp.size, cfg.d_model, wte.dtype
        x, hf, mf, rf, saved = self._trunk(params, inp)
        logits = ws("logits", (n, cfg.vocab_size), dt)
        dhf = ws("dhf", (n, d), dt)
        loss, dwte = _lm_head_loss_grad_into(hf, wte, tgt, logits, dhf)
        grads: dict[str, np.ndarray] = {}
        dx = ws("dx", (n, d), dt)
        grads["transformer.ln_f.weight"], grads["transformer.ln_f.bias"] = _layernorm_bwd_into(
            dhf, x, params["transformer.ln_f.weight"], mf, rf, dx
        )
        for i in range(cfg.n_layer - 1, -1, -1):
            g = self._block_bwd(ws, dx, saved.pop(), self._layer(params, i), bsz, t_len)
            for suffix, gi in zip(_LAYER_TENSORS, g, strict=True):
                grads[f"transformer.h.{i}.{suffix}"] = gi
        _embed_bwd_kernel(inp, dx, dwte)
        dwpe = np.zeros_like(params["transformer.wpe.weight"])
        _pos_bwd_kernel(t_len, dx, dwpe)
        grads["transformer.wte.weight"] = dwte
        grads["transformer.wpe.weight"] = dwpe
        return float(loss), {name: grads[name] for name in self.param_shapes()}

    def _stacked(self, params):
        """Per-layer tensors as 12 tuples (one per _LAYER_TENSORS entry) of L arrays."""
        names = self.__dict__.get("_stacked_names")
        if names is None:
            n = self.config.n_layer
            names = tuple(
                tuple(f"transformer.h.{i}.{suffix}" for i in range(n)) for suffix in _LAYER_TENSORS
            )
            self.__dict__["_stacked_names"] = names
        return tuple(tuple(params[name] for name in group) for group in names)

    def forward_step(
        self, params: dict, token: np.ndarray, cache: KVCache, *, check: bool = True
    ) -> np.ndarray:
        """Logits float[B, V] for one new token per sequence; advances ``cache``.

        ``check=False`` skips validation (for callers that validated params once and
        pass int32[B] tokens in range, like :func:`kernels.infer.generate`).
        """
        if check:
            token, _ = self.check_step(params, token, cache)
        elif cache.pos >= cache.capacity:
            raise ValueError(f"KV cache is full: n_ctx={cache.capacity} positions used")
        args = self._decode_args(params, cache)
        logits = _decode_step_kernel(token.reshape(-1, 1), cache.pos, *args)
        cache.pos += 1
        return logits

    def _decode_args(self, params: dict, cache: KVCache) -> tuple:
        """What the decode kernels take after the token(s) and the position: the weights
        (per-layer ones stacked), the cache, the head count and eps."""
        cfg = self.config
        return (
            params["transformer.wte.weight"],
            params["transformer.wpe.weight"],
            *self._stacked(params),
            params["transformer.ln_f.weight"],
            params["transformer.ln_f.bias"],
            cache.k,
            cache.v,
            cfg.n_head,
            cfg.eps,
        )

    def decode_greedy(
        self, params: dict, out: np.ndarray, t0: int, cache: KVCache, *, check: bool = True
    ) -> None:
        """Fill ``out[:, t0:]`` greedily after the prompt ``out[:, :t0]``, feeding the prompt
        through an empty ``cache`` token by token: the tokens ``forward_step`` and
        ``np.argmax`` give, in one call instead of a Python round trip per token.
        ``check=False`` skips validation (``generate`` validated everything)."""
        if check:
            self.check_greedy(params, out, t0, cache)
        _greedy_kernel(out, t0, *self._decode_args(params, cache))
        cache.pos = out.shape[1] - 1
