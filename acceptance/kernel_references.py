"""Plain-NumPy float64 references of the kernels in kernels/ops and kernels/optim.

Written the textbook way and independently of the kernels; the kernel tests use
them too (tests/naive.py re-exports them). Everything is computed in float64.
"""

from __future__ import annotations

import math

import numpy as np


def f64(a: object) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def linear(x, w, b=None, layout="io"):
    y = f64(x) @ (f64(w) if layout == "io" else f64(w).T)
    return y if b is None else y + f64(b)


def embedding(weight, tokens, positions=None):
    x = f64(weight)[tokens]
    if positions is not None:
        x = x + f64(positions)[: tokens.shape[1]][None]
    return x.reshape(-1, weight.shape[1])


def layernorm(x, w, b, eps):
    x = f64(x)
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * f64(w) + f64(b)


def rmsnorm(x, w, eps):
    x = f64(x)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * f64(w)


def gelu(x):
    x = f64(x)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def sigmoid(x):
    x = f64(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def silu(x):
    return f64(x) * sigmoid(x)


def swiglu(gate, up):
    return silu(gate) * f64(up)


def rope(x, n_head, theta=10000.0, pos0=0):
    """x[B, T, H*hd] rotated with the rotate-half layout at positions pos0..pos0+T-1."""
    x = f64(x)
    bsz, t_len, c = x.shape
    hd = c // n_head
    half = hd // 2
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = (pos0 + np.arange(t_len))[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[None, :, None, :], np.sin(ang)[None, :, None, :]
    xh = x.reshape(bsz, t_len, n_head, hd)
    a, b = xh[..., :half], xh[..., half:]
    out = np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)
    return out.reshape(bsz, t_len, c)


def softmax(s, axis=-1):
    s = f64(s)
    s = s - s.max(axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis, keepdims=True)


def causal_attention(q, k, v, n_head):
    """q, k, v [B, T, C] -> out [B, T, C], probs [B, H, T, T]."""
    q, k, v = f64(q), f64(k), f64(v)
    bsz, t_len, c = q.shape
    hd = c // n_head

    def heads(a):
        return a.reshape(bsz, t_len, n_head, hd).transpose(0, 2, 1, 3)

    s = heads(q) @ heads(k).transpose(0, 1, 3, 2) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((t_len, t_len), bool)), s, -np.inf)
    p = softmax(s)
    o = (p @ heads(v)).transpose(0, 2, 1, 3).reshape(bsz, t_len, c)
    return o, p


def cross_entropy_rows(logits, targets):
    z = f64(logits)
    m = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(-1)) + m[:, 0]
    return lse - z[np.arange(z.shape[0]), targets]


def adamw_step(p, g, m, v, t, lr, b1, b2, eps, wd):
    """One torch.optim.AdamW step (t counts from 1); returns new (p, m, v)."""
    p, g, m, v = f64(p), f64(g), f64(m), f64(v)
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1**t)
    vhat = v / (1 - b2**t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v
