"""Llama family: RMSNorm, SwiGLU MLP, rotary positions, untied LM head.

Weights use torch ``nn.Linear``'s layout ``W[out, in]`` (``y = x @ W.T``),
with the tensor names of real Llama checkpoints. q/k/v (and gate/up) are
multiplied as one stacked matrix per layer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ..ops.activations import _swiglu_bwd_into, _swiglu_fwd_into, _swiglu_fwd_kernel
from ..ops.attention import _attn_bwd_into, _attn_fwd_into, _attn_step_kernel
from ..ops.embedding import _embed_bwd_kernel, _embed_fwd_into, _embed_fwd_kernel
from ..ops.linear import (
    _add_inplace_kernel,
    _linear_oi_bwd_into,
    _linear_oi_fwd_into,
    _linear_oi_res_fwd_into,
    _linear_oi_res_fwd_kernel,
)
from ..ops.norms import _rmsnorm_bwd_into, _rmsnorm_fwd_into, _rmsnorm_fwd_kernel
from ..ops.rope import _rope_kernel, rope_tables
from .base import KVCache, TransformerBase
from .head import _argmax_first, _lm_head_logits_kernel, _lm_head_loss_grad_into

_LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


@njit(**JIT)
def _block_step_kernel(
    x, wn1, wq, wk, wv, wo, wn2, wg, wu, wdown, cos, sin, kc, vc, pos, n_head, eps
):
    """One block for one new position per sequence (x[B, d]) with a KV cache."""
    bsz, c = x.shape
    hd = c // n_head
    f = wg.shape[0]
    h1, _ = _rmsnorm_fwd_kernel(x, wn1, eps)
    qkv = np.empty((bsz, 3 * c), dtype=x.dtype)
    qkv[:, :c] = np.dot(h1, wq.T)
    qkv[:, c : 2 * c] = np.dot(h1, wk.T)
    qkv[:, 2 * c :] = np.dot(h1, wv.T)
    _rope_kernel(qkv, 1, pos, 2 * n_head, hd, cos, sin, 1.0)
    att = _attn_step_kernel(qkv, kc, vc, pos, n_head)
    x2 = _linear_oi_res_fwd_kernel(att, wo, x)
    h2, _ = _rmsnorm_fwd_kernel(x2, wn2, eps)
    gu = np.empty((bsz, 2 * f), dtype=x.dtype)
    gu[:, :f] = np.dot(h2, wg.T)
    gu[:, f:] = np.dot(h2, wu.T)
    hm = _swiglu_fwd_kernel(gu, f)
    return _linear_oi_res_fwd_kernel(hm, wdown, x2)


@njit(**JIT)
def _decode_step_kernel(
    tokens, pos, emb, wn1, wq, wk, wv, wo, wn2, wg, wu, wdown, wnorm, lm_head, cos, sin,
    kcache, vcache, n_head, eps,
):  # fmt: skip
    """The whole model for one new token per sequence; per-layer tensors come as tuples."""
    x = _embed_fwd_kernel(emb, tokens)
    for i in range(len(wn1)):
        x = _block_step_kernel(
            x, wn1[i], wq[i], wk[i], wv[i], wo[i], wn2[i], wg[i], wu[i], wdown[i], cos, sin,
            kcache[i], vcache[i], pos, n_head, eps,
        )  # fmt: skip
    hf, _ = _rmsnorm_fwd_kernel(x, wnorm, eps)
    return _lm_head_logits_kernel(hf, lm_head)


@njit(**JIT)
def _greedy_kernel(
    out, t0, emb, wn1, wq, wk, wv, wo, wn2, wg, wu, wdown, wnorm, lm_head, cos, sin,
    kcache, vcache, n_head, eps,
):  # fmt: skip
    """Greedy decoding in one call (``GPT2.decode_greedy``'s contract), Llama's step."""
    bsz, total = out.shape
    tok = np.empty((bsz, 1), dtype=np.int32)
    logits = np.empty((bsz, lm_head.shape[0]), dtype=lm_head.dtype)
    for pos in range(total - 1):
        if pos >= t0:  # chosen from the logits of the step before
            for b in range(bsz):
                out[b, pos] = _argmax_first(logits[b])
        for b in range(bsz):
            tok[b, 0] = out[b, pos]
        logits = _decode_step_kernel(
            tok, pos, emb, wn1, wq, wk, wv, wo, wn2, wg, wu, wdown, wnorm, lm_head, cos, sin,
            kcache, vcache, n_head, eps,
        )  # fmt: skip
    for b in range(bsz):
        out[b, total - 1] = _argmax_first(logits[b])


class Llama(TransformerBase):
    """Llama: ``build_model(ModelConfig(family="llama", ...))``."""

    family = "llama"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._tables: dict = {}

    def param_shapes(self) -> dict[str, tuple]:
        c = self.config
        d, f = c.d_model, c.d_ff
        shapes: dict[str, tuple] = {"model.embed_tokens.weight": (c.vocab_size, d)}
        per_layer = {
            "input_layernorm.weight": (d,),
            "self_attn.q_proj.weight": (d, d),
            "self_attn.k_proj.weight": (d, d),
            "self_attn.v_proj.weight": (d, d),
            "self_attn.o_proj.weight": (d, d),
            "post_attention_layernorm.weight": (d,),
            "mlp.gate_proj.weight": (f, d),
            "mlp.up_proj.weight": (f, d),
            "mlp.down_proj.weight": (d, f),
        }
        for i in range(c.n_layer):
            for suffix in _LAYER_TENSORS:
                shapes[f"model.layers.{i}.{suffix}"] = per_layer[suffix]
        shapes["model.norm.weight"] = (d,)
        shapes["lm_head.weight"] = (c.vocab_size, d)
        return shapes

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """N(0, 0.02) matrices, output projections scaled by 1/sqrt(2 L), unit norms."""
        std = self.config.init_std
        proj_std = std / math.sqrt(2 * self.config.n_layer)

        def kind(name: str):
            if name.endswith("norm.weight"):
                return "ones"
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                return proj_std
            return std

        return self._init(seed, kind)

    def rope_tables(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        key = np.dtype(dtype).str
        if key not in self._tables:
            c = self.config
            self._tables[key] = rope_tables(c.n_ctx, c.head_dim, c.rope_theta, dtype)
        return self._tables[key]

    def _layer(self, params, i):
        g = [params[f"model.layers.{i}.{s}"] for s in _LAYER_TENSORS]
        wqkv = np.concatenate(g[1:4], axis=0)
        wgu = np.concatenate(g[6:8], axis=0)
        return g[0], wqkv, g[4], g[5], wgu, g[8]

    def _block_fwd(self, ws, i, x, p, cos, sin, bsz, t_len):
        """Block i on x[N, d]; returns the output and what backward needs."""
        cfg = self.config
        wn1, wqkv, wo, wn2, wgu, wdown = p
        n, d = x.shape
        f = cfg.d_ff
        dt = x.dtype
        k = f"{i}."
        h1, r1 = ws(k + "h1", (n, d), dt), ws(k + "r1", (n,), dt)
        _rmsnorm_fwd_into(x, wn1, cfg.eps, h1, r1)
        qkv = ws(k + "qkv", (n, 3 * d), dt)
        _linear_oi_fwd_into(h1, wqkv, qkv)
        _rope_kernel(qkv, t_len, 0, 2 * cfg.n_head, cfg.head_dim, cos, sin, 1.0)
        att = ws(k + "att", (n, d), dt)
        probs = ws(k + "probs", (bsz, cfg.n_head, t_len, t_len), dt)
        _attn_fwd_into(qkv, bsz, t_len, cfg.n_head, att, probs)
        x2 = ws(k + "x2", (n, d), dt)
        _linear_oi_res_fwd_into(att, wo, x, x2)
        h2, r2 = ws(k + "h2", (n, d), dt), ws(k + "r2", (n,), dt)
        _rmsnorm_fwd_into(x2, wn2, cfg.eps, h2, r2)
        gu = ws(k + "gu", (n, 2 * f), dt)
        _linear_oi_fwd_into(h2, wgu, gu)
        hm = ws(k + "hm", (n, f), dt)
        _swiglu_fwd_into(gu, f, hm)
        x3 = ws(k + "x3", (n, d), dt)
        _linear_oi_res_fwd_into(hm, wdown, x2, x3)
        return x3, (x, h1, r1, qkv, att, probs, x2, h2, r2, gu, hm)

    def _block_bwd(self, ws, dx, saved, p, cos, sin, bsz, t_len):
        """Backward of a block: dx (gradient of its output) becomes that of its input.

        Returns the gradients of (wn1, wqkv, wo, wn2, wgu, wdown).
        """
        cfg = self.config
        x, h1, r1, qkv, att, probs, x2, h2, r2, gu, hm = saved
        wn1, wqkv, wo, wn2, wgu, wdown = p
        n, d = x.shape
        f = cfg.d_ff
        dt = x.dtype
        dhm = ws("dhm", (n, f), dt)
        dwdown = _linear_oi_bwd_into(hm, wdown, dx, dhm)
        dgu = ws("dgu", (n, 2 * f), dt)
        _swiglu_bwd_into(gu, dhm, dgu)
        dh2 = ws("dh2", (n, d), dt)
        dwgu = _linear_oi_bwd_into(h2, wgu, dgu, dh2)
        dx2 = ws("dx2", (n, d), dt)
        dwn2 = _rmsnorm_bwd_into(dh2, x2, wn2, r2, dx2)
        _add_inplace_kernel(dx2, dx)
        datt = ws("datt", (n, d), dt)
        dwo = _linear_oi_bwd_into(att, wo, dx2, datt)
        dqkv = ws("dqkv", (n, 3 * d), dt)
        _attn_bwd_into(datt, qkv, probs, bsz, t_len, cfg.n_head, dqkv)
        _rope_kernel(dqkv, t_len, 0, 2 * cfg.n_head, cfg.head_dim, cos, sin, -1.0)
        dh1 = ws("dh1", (n, d), dt)
        dwqkv = _linear_oi_bwd_into(h1, wqkv, dqkv, dh1)
        dwn1 = _rmsnorm_bwd_into(dh1, x, wn1, r1, dx)
        _add_inplace_kernel(dx, dx2)
        return dwn1, dwqkv, dwo, dwn2, dwgu, dwdown

    def _trunk(self, params, inp, dtype):
        cfg = self.config
        ws = self.workspace()
        bsz, t_len = inp.shape
        n, d = inp.size, cfg.d_model
        cos, sin = self.rope_tables(dtype)
        x = ws("x0", (n, d), dtype)
        _embed_fwd_into(params["model.embed_tokens.weight"], inp, x)
        saved = []
        for i in range(cfg.n_layer):
            x, s = self._block_fwd(ws, i, x, self._layer(params, i), cos, sin, bsz, t_len)
            saved.append(s)
        hf, rf = ws("hf", (n, d), dtype), ws("rf", (n,), dtype)
        _rmsnorm_fwd_into(x, params["model.norm.weight"], cfg.eps, hf, rf)
        return x, hf, rf, saved

    def forward(self, params: dict, tokens: np.ndarray) -> np.ndarray:
        """Logits float[B, T, V] for tokens int[B, T]."""
        dtype = self.check_params(params)
        tokens = self.check_tokens(tokens)
        _, hf, _, _ = self._trunk(params, tokens, dtype)
        logits = _lm_head_logits_kernel(hf, params["lm_head.weight"])
        return logits.reshape(tokens.shape[0], tokens.shape[1], -1)

    def loss_and_grads(self, params: dict, tokens: np.ndarray) -> tuple[float, dict]:
        """Mean next-token cross-entropy of tokens int[B, T+1] and its exact gradients."""
        dtype = self.check_params(params)
        inp, tgt = self.split_batch(tokens)
        cfg = self.config
        ws = self.workspace()
        bsz, t_len = inp.shape
        n, d = inp.size, cfg.d_model
        cos, sin = self.rope_tables(dtype)
        x, hf, rf, saved = self._trunk(params, inp, dtype)
        logits = ws("logits", (n, cfg.vocab_size), dtype)
        dhf = ws("dhf", (n, d), dtype)
        loss, dlm = _lm_head_loss_grad_into(hf, params["lm_head.weight"], tgt, logits, dhf)
        grads: dict[str, np.ndarray] = {"lm_head.weight": dlm}
        dx = ws("dx", (n, d), dtype)
        grads["model.norm.weight"] = _rmsnorm_bwd_into(dhf, x, params["model.norm.weight"], rf, dx)
        c, f = cfg.d_model, cfg.d_ff
        for i in range(cfg.n_layer - 1, -1, -1):
            g = self._block_bwd(ws, dx, saved.pop(), self._layer(params, i), cos, sin, bsz, t_len)
            dwn1, dwqkv, dwo, dwn2, dwgu, dwdown = g
            pre = f"model.layers.{i}."
            grads[pre + "input_layernorm.weight"] = dwn1
            grads[pre + "self_attn.q_proj.weight"] = dwqkv[:c]
            grads[pre + "self_attn.k_proj.weight"] = dwqkv[c : 2 * c]
            grads[pre + "self_attn.v_proj.weight"] = dwqkv[2 * c :]
            grads[pre + "self_attn.o_proj.weight"] = dwo
            grads[pre + "post_attention_layernorm.weight"] = dwn2
            grads[pre + "mlp.gate_proj.weight"] = dwgu[:f]
            grads[pre + "mlp.up_proj.weight"] = dwgu[f:]
            grads[pre + "mlp.down_proj.weight"] = dwdown
        demb = np.zeros_like(params["model.embed_tokens.weight"])
        _embed_bwd_kernel(inp, dx, demb)
        grads["model.embed_tokens.weight"] = demb
        return float(loss), {name: grads[name] for name in self.param_shapes()}

    def _stacked(self, params):
        """Per-layer tensors as 9 tuples (one per _LAYER_TENSORS entry) of L arrays."""
        names = self.__dict__.get("_stacked_names")
        if names is None:
            n = self.config.n_layer
            names = tuple(
                tuple(f"model.layers.{i}.{suffix}" for i in range(n)) for suffix in _LAYER_TENSORS
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
        (per-layer ones stacked), the rope tables, the cache, the head count and eps."""
        cfg = self.config
        cos, sin = self.rope_tables(cache.k.dtype)
        return (
            params["model.embed_tokens.weight"],
            *self._stacked(params),
            params["model.norm.weight"],
            params["lm_head.weight"],
            cos,
            sin,
            cache.k,
            cache.v,
            cfg.n_head,
            cfg.eps,
        )

    def decode_greedy(
        self, params: dict, out: np.ndarray, t0: int, cache: KVCache, *, check: bool = True
    ) -> None:
        """``GPT2.decode_greedy`` for Llama: the greedy tokens in one call."""
        if check:
            self.check_greedy(params, out, t0, cache)
        _greedy_kernel(out, t0, *self._decode_args(params, cache))
        cache.pos = out.shape[1] - 1
