"""Causal multi-head self-attention on a packed ``qkv[B*T, 3C]`` (q | k | v).

Heads live in column blocks of size ``hd = C // H``; row ``b*T + t`` is
token ``t`` of sequence ``b``. Scores are scaled by ``1/sqrt(hd)``; softmax
subtracts the row max and only sees positions ``<= t``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT
from ._check import check_float, check_shape
from .fastexp import _exp_inplace, _max, _sum_f64
from .xent import _rowmax


@njit(**JIT)
def _causal_softmax_rows(s, p):
    """p[i, :i+1] = softmax(s[i, :i+1]); p[i, i+1:] = 0."""
    t_len = s.shape[0]
    kbuf = np.empty(t_len, dtype=np.int32)
    for i in range(t_len):
        n = i + 1
        si = s[i, :n]
        pi = p[i, :n]
        m = _rowmax(si)
        for j in range(n):
            pi[j] = si[j] - m
        _exp_inplace(pi, kbuf)
        inv = p.dtype.type(1.0 / _sum_f64(pi))
        for j in range(n):
            pi[j] *= inv
        rest = p[i, n:]
        for j in range(rest.size):
            rest[j] = 0.0


@njit(**JIT)
def _attn_fwd_kernel(qkv, bsz, t_len, n_head):
    """Return ``(out[B*T, C], probs[B, H, T, T])``."""
    c = qkv.shape[1] // 3
    out = np.empty((bsz * t_len, c), dtype=qkv.dtype)
    probs = np.empty((bsz, n_head, t_len, t_len), dtype=qkv.dtype)
    _attn_fwd_into(qkv, bsz, t_len, n_head, out, probs)
    return out, probs


@njit(**JIT)
def _attn_fwd_into(qkv, bsz, t_len, n_head, out, probs):
    """Write out[B*T, C] and probs[B, H, T, T]."""
    c3 = qkv.shape[1]
    c = c3 // 3
    hd = c // n_head
    scale = qkv.dtype.type(1.0 / math.sqrt(hd))
    q = np.empty((t_len, hd), dtype=qkv.dtype)
    k = np.empty((t_len, hd), dtype=qkv.dtype)
    v = np.empty((t_len, hd), dtype=qkv.dtype)
    for b in range(bsz):
        for h in range(n_head):
            for t in range(t_len):
                row = qkv[b * t_len + t]
                qrow = row[h * hd : h * hd + hd]
                krow = row[c + h * hd : c + h * hd + hd]
                vrow = row[2 * c + h * hd : 2 * c + h * hd + hd]
                for j in range(hd):
                    q[t, j] = qrow[j] * scale
                    k[t, j] = krow[j]
                    v[t, j] = vrow[j]
            s = np.dot(q, k.T)
            p = probs[b, h]
            _causal_softmax_rows(s, p)
            o = np.dot(p, v)
            for t in range(t_len):
                orow = out[b * t_len + t, h * hd : h * hd + hd]
                for j in range(hd):
                    orow[j] = o[t, j]


@njit(**JIT)
def _attn_bwd_kernel(dout, qkv, probs, bsz, t_len, n_head):
    """Return dqkv[B*T, 3C] given dout[B*T, C] and the forward's probs."""
    dqkv = np.empty_like(qkv)
    _attn_bwd_into(dout, qkv, probs, bsz, t_len, n_head, dqkv)
    return dqkv


@njit(**JIT)
def _attn_bwd_into(dout, qkv, probs, bsz, t_len, n_head, dqkv):
    """Write dqkv[B*T, 3C] given dout[B*T, C] and the forward's probs."""
    c3 = qkv.shape[1]
    c = c3 // 3
    hd = c // n_head
    scale = qkv.dtype.type(1.0 / math.sqrt(hd))
    q = np.empty((t_len, hd), dtype=qkv.dtype)
    k = np.empty((t_len, hd), dtype=qkv.dtype)
    v = np.empty((t_len, hd), dtype=qkv.dtype)
    do = np.empty((t_len, hd), dtype=qkv.dtype)
    ds = np.empty((t_len, t_len), dtype=qkv.dtype)
    for b in range(bsz):
        for h in range(n_head):
            for t in range(t_len):
                r = b * t_len + t
                row = qkv[r]
                qrow = row[h * hd : h * hd + hd]
                krow = row[c + h * hd : c + h * hd + hd]
                vrow = row[2 * c + h * hd : 2 * c + h * hd + hd]
                dorow = dout[r, h * hd : h * hd + hd]
                for j in range(hd):
                    q[t, j] = qrow[j] * scale
                    k[t, j] = krow[j]
                    v[t, j] = vrow[j]
                    do[t, j] = dorow[j]
            p = probs[b, h]
            dp = np.dot(do, v.T)
            dv = np.dot(p.T, do)
            for i in range(t_len):
                pi = p[i]
                dpi = dp[i]
                dsi = ds[i]
                acc = 0.0
                for j in range(i + 1):
                    acc += pi[j] * dpi[j]
                a = dsi.dtype.type(acc)
                for j in range(i + 1):
                    dsi[j] = pi[j] * (dpi[j] - a)
                for j in range(i + 1, t_len):
                    dsi[j] = 0.0
            dq = np.dot(ds, k)
            dk = np.dot(ds.T, q)
            for t in range(t_len):
                drow = dqkv[b * t_len + t]
                dq_row = drow[h * hd : h * hd + hd]
                dk_row = drow[c + h * hd : c + h * hd + hd]
                dv_row = drow[2 * c + h * hd : 2 * c + h * hd + hd]
                for j in range(hd):
                    dq_row[j] = dq[t, j] * scale
                    dk_row[j] = dk[t, j]
                    dv_row[j] = dv[t, j]


@njit(**JIT)
def _attn_step_kernel(qkv, kcache, vcache, pos, n_head):
    """One decoding step with a KV cache.

    qkv[B, 3C] holds the new token's q, k, v (rotated already if needed);
    k and v are written to ``kcache/vcache[B, H, n_ctx, hd]`` at ``pos`` and
    the query attends to positions 0..pos. Returns out[B, C].
    """
    bsz = qkv.shape[0]
    c = qkv.shape[1] // 3
    hd = c // n_head
    scale = 1.0 / math.sqrt(hd)
    n = pos + 1
    out = np.empty((bsz, c), dtype=qkv.dtype)
    s = np.empty(n, dtype=qkv.dtype)
    kbuf = np.empty(n, dtype=np.int32)
    for b in range(bsz):
        row = qkv[b]
        for h in range(n_head):
            kc = kcache[b, h]
            vc = vcache[b, h]
            q = row[h * hd : h * hd + hd]
            knew = row[c + h * hd : c + h * hd + hd]
            vnew = row[2 * c + h * hd : 2 * c + h * hd + hd]
            kp = kc[pos]
            vp = vc[pos]
            for j in range(hd):
                kp[j] = knew[j]
                vp[j] = vnew[j]
            for t in range(n):
                kt = kc[t]
                acc = 0.0
                for j in range(hd):
                    acc += q[j] * kt[j]
                s[t] = acc * scale
            m = _max(s)
            for t in range(n):
                s[t] -= m
            _exp_inplace(s, kbuf)
            inv = 1.0 / _sum_f64(s)
            o = out[b, h * hd : h * hd + hd]
            for j in range(hd):
                o[j] = 0.0
            for t in range(n):
                w = s[t] * inv
                vt = vc[t]
                for j in range(hd):
                    o[j] += w * vt[j]
    return out


def _pack(q, k, v, n_head):
    q = check_float("q", q, 3)
    k = check_float("k", k, 3, q.dtype)
    v = check_float("v", v, 3, q.dtype)
    check_shape("k", k, q.shape)
    check_shape("v", v, q.shape)
    bsz, t_len, c = q.shape
    if n_head < 1 or c % n_head:
        raise ValueError(f"q's last axis ({c}) must split into n_head={n_head} heads")
    qkv = np.concatenate([q, k, v], axis=2).reshape(bsz * t_len, 3 * c)
    return qkv, bsz, t_len, c


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int):
    """Causal attention for q, k, v [B, T, C]; returns ``(out[B, T, C], probs[B, H, T, T])``."""
    qkv, bsz, t_len, c = _pack(q, k, v, n_head)
    out, probs = _attn_fwd_kernel(qkv, bsz, t_len, n_head)
    return out.reshape(bsz, t_len, c), probs


def causal_attention_backward(
    dout: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, probs: np.ndarray, n_head: int
):
    """Return ``(dq, dk, dv)`` of :func:`causal_attention`."""
    qkv, bsz, t_len, c = _pack(q, k, v, n_head)
    dout = check_float("dout", dout, 3, q.dtype)
    check_shape("dout", dout, q.shape)
    probs = check_float("probs", probs, 4, q.dtype)
    check_shape("probs", probs, (bsz, n_head, t_len, t_len))
    dqkv = _attn_bwd_kernel(dout.reshape(bsz * t_len, c), qkv, probs, bsz, t_len, n_head)
    dqkv = dqkv.reshape(bsz, t_len, 3 * c)
    return (
        np.ascontiguousarray(dqkv[..., :c]),
        np.ascontiguousarray(dqkv[..., c : 2 * c]),
        np.ascontiguousarray(dqkv[..., 2 * c :]),
    )
