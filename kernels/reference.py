"""Plain-NumPy reference engine (no numba) for runtime-parity checks.

``reference_forward(family, cfg, params, tokens)`` computes the logits of
either family the textbook way, independently of kernels/ops.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig


def _layernorm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def _rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def _attention(q, k, v, n_head, rope=None):
    """q, k, v [B, T, C] -> [B, T, C], causal, heads split from C."""
    bsz, t_len, c = q.shape
    hd = c // n_head

    def heads(a):
        return a.reshape(bsz, t_len, n_head, hd).transpose(0, 2, 1, 3)

    q, k, v = heads(q), heads(k), heads(v)
    if rope is not None:
        q, k = rope(q), rope(k)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    mask = np.triu(np.ones((t_len, t_len), dtype=bool), 1)
    s = np.where(mask, -np.inf, s)
    o = _softmax(s) @ v
    return o.transpose(0, 2, 1, 3).reshape(bsz, t_len, c)


def _rotary(cfg: ModelConfig, t_len: int):
    hd = cfg.head_dim
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(t_len, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)
    sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)

    def apply(x):  # x[B, H, T, hd]
        half = hd // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return (x * cos + rot * sin).astype(x.dtype)

    return apply


def _gpt2(cfg, p, tokens):
    t_len = tokens.shape[1]
    x = p["transformer.wte.weight"][tokens] + p["transformer.wpe.weight"][:t_len]
    for i in range(cfg.n_layer):
        pre = f"transformer.h.{i}."
        h = _layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], cfg.eps)
        qkv = h @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        a = _attention(q, k, v, cfg.n_head)
        x = x + a @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        h = _layernorm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], cfg.eps)
        h = _gelu(h @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
        x = x + h @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    x = _layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], cfg.eps)
    return x @ p["transformer.wte.weight"].T


def _llama(cfg, p, tokens):
    rope = _rotary(cfg, tokens.shape[1])
    x = p["model.embed_tokens.weight"][tokens]
    for i in range(cfg.n_layer):
        pre = f"model.layers.{i}."
        h = _rmsnorm(x, p[pre + "input_layernorm.weight"], cfg.eps)
        q = h @ p[pre + "self_attn.q_proj.weight"].T
        k = h @ p[pre + "self_attn.k_proj.weight"].T
        v = h @ p[pre + "self_attn.v_proj.weight"].T
        a = _attention(q, k, v, cfg.n_head, rope)
        x = x + a @ p[pre + "self_attn.o_proj.weight"].T
        h = _rmsnorm(x, p[pre + "post_attention_layernorm.weight"], cfg.eps)
        g = h @ p[pre + "mlp.gate_proj.weight"].T
        u = h @ p[pre + "mlp.up_proj.weight"].T
        x = x + (_silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
    x = _rmsnorm(x, p["model.norm.weight"], cfg.eps)
    return x @ p["lm_head.weight"].T


def reference_forward(
    family: str, cfg: ModelConfig, params: dict, tokens: np.ndarray
) -> np.ndarray:
    """Logits [B, T, V] of ``family`` computed with plain NumPy."""
    if family != cfg.family:
        raise ValueError(f"family {family!r} contradicts the config's {cfg.family!r}")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D [batch, time] (got shape {tokens.shape})")
    if tokens.shape[1] > cfg.n_ctx:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx={cfg.n_ctx}")
    if family == "gpt2":
        return _gpt2(cfg, params, tokens)
    if family == "llama":
        return _llama(cfg, params, tokens)
    raise ValueError(f"unknown family {family!r}")


def reference_loss(family: str, cfg: ModelConfig, params: dict, tokens: np.ndarray) -> float:
    """Mean next-token cross-entropy of tokens [B, T+1] (float64 accumulation)."""
    logits = reference_forward(family, cfg, params, tokens[:, :-1]).astype(np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits).sum(-1))
    tgt = tokens[:, 1:]
    picked = np.take_along_axis(logits, tgt[..., None], -1)[..., 0]
    return float((lse - picked).mean())
