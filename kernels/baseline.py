"""Plain-NumPy baselines of the core's hot paths (no numba).

The speed contract and ``benchmarks/core_speed.py`` time the numba engine
against these in the same process: a GPT-2 training step (forward, backward,
AdamW), an MLP step and KV-cached greedy decoding. Each is checked to give the
same numbers as the engine before it is timed.
"""

from __future__ import annotations

import math

import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)


def np_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps)
    xhat = xc * rstd
    return xhat * w + b, (xhat, rstd)


def np_layernorm_bwd(dy, cache, w):
    xhat, rstd = cache
    dw = (dy * xhat).reshape(-1, dy.shape[-1]).sum(0)
    db = dy.reshape(-1, dy.shape[-1]).sum(0)
    dxhat = dy * w
    dx = rstd * (
        dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    )
    return dx, dw, db


def np_gelu(x):
    t = np.tanh(GELU_C * (x + 0.044715 * x * x * x))
    return 0.5 * x * (1.0 + t), t


def np_gelu_bwd(dy, x, t):
    du = GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


def np_gpt2_loss_and_grads(cfg, p, tokens):
    """Plain NumPy float32 GPT-2: mean next-token loss and exact gradients."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    B, T = inp.shape
    C, H = cfg.d_model, cfg.n_head
    hd = C // H
    scale = np.float32(1.0 / math.sqrt(hd))
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    x = p["transformer.wte.weight"][inp] + p["transformer.wpe.weight"][:T]
    caches = []
    for i in range(cfg.n_layer):
        pre = f"transformer.h.{i}."
        h1, ln1 = np_layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], cfg.eps)
        qkv = h1 @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = (a.reshape(B, T, H, hd).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, -1))
        s = (q @ k.transpose(0, 1, 3, 2)) * scale
        s[..., mask] = -np.inf
        s -= s.max(-1, keepdims=True)
        P = np.exp(s)
        P /= P.sum(-1, keepdims=True)
        o = (P @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x2 = x + o @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        h2, ln2 = np_layernorm(x2, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], cfg.eps)
        f = h2 @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"]
        g, t = np_gelu(f)
        x3 = x2 + g @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
        caches.append((h1, ln1, q, k, v, P, o, h2, ln2, f, g, t))
        x = x3
    hf, lnf = np_layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], cfg.eps)
    wte = p["transformer.wte.weight"]
    logits = hf.reshape(B * T, C) @ wte.T
    logits -= logits.max(-1, keepdims=True)
    e = np.exp(logits)
    e /= e.sum(-1, keepdims=True)
    rows = np.arange(B * T)
    flat_t = tgt.reshape(-1)
    loss = float(-np.log(e[rows, flat_t].astype(np.float64)).mean())
    e[rows, flat_t] -= 1.0
    dlogits = e * np.float32(1.0 / (B * T))
    grads = {}
    dwte = dlogits.T @ hf.reshape(B * T, C)
    dhf = (dlogits @ wte).reshape(B, T, C)
    dx, grads["transformer.ln_f.weight"], grads["transformer.ln_f.bias"] = np_layernorm_bwd(
        dhf, lnf, p["transformer.ln_f.weight"]
    )
    for i in range(cfg.n_layer - 1, -1, -1):
        pre = f"transformer.h.{i}."
        h1, ln1, q, k, v, P, o, h2, ln2, f, g, t = caches[i]
        dm = dx.reshape(B * T, C)
        grads[pre + "mlp.c_proj.weight"] = g.reshape(B * T, -1).T @ dm
        grads[pre + "mlp.c_proj.bias"] = dm.sum(0)
        dg = dm @ p[pre + "mlp.c_proj.weight"].T
        df = np_gelu_bwd(dg, f.reshape(B * T, -1), t.reshape(B * T, -1))
        grads[pre + "mlp.c_fc.weight"] = h2.reshape(B * T, C).T @ df
        grads[pre + "mlp.c_fc.bias"] = df.sum(0)
        dh2 = (df @ p[pre + "mlp.c_fc.weight"].T).reshape(B, T, C)
        dln, grads[pre + "ln_2.weight"], grads[pre + "ln_2.bias"] = np_layernorm_bwd(
            dh2, ln2, p[pre + "ln_2.weight"]
        )
        dx2 = dx + dln
        da = dx2.reshape(B * T, C)
        grads[pre + "attn.c_proj.weight"] = o.reshape(B * T, C).T @ da
        grads[pre + "attn.c_proj.bias"] = da.sum(0)
        do = (da @ p[pre + "attn.c_proj.weight"].T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        dP = do @ v.transpose(0, 1, 3, 2)
        dv = P.transpose(0, 1, 3, 2) @ do
        ds = P * (dP - (dP * P).sum(-1, keepdims=True)) * scale
        dq = ds @ k
        dk = ds.transpose(0, 1, 3, 2) @ q
        dqkv = np.concatenate(
            [a.transpose(0, 2, 1, 3).reshape(B * T, C) for a in (dq, dk, dv)], axis=1
        )
        grads[pre + "attn.c_attn.weight"] = h1.reshape(B * T, C).T @ dqkv
        grads[pre + "attn.c_attn.bias"] = dqkv.sum(0)
        dh1 = (dqkv @ p[pre + "attn.c_attn.weight"].T).reshape(B, T, C)
        dln, grads[pre + "ln_1.weight"], grads[pre + "ln_1.bias"] = np_layernorm_bwd(
            dh1, ln1, p[pre + "ln_1.weight"]
        )
        dx = dx2 + dln
    np.add.at(dwte, inp.reshape(-1), dx.reshape(B * T, C))
    dwpe = np.zeros_like(p["transformer.wpe.weight"])
    dwpe[:T] = dx.sum(0)
    grads["transformer.wte.weight"] = dwte
    grads["transformer.wpe.weight"] = dwpe
    return loss, grads


class NumpyAdamW:
    """Plain NumPy AdamW with global-norm clipping, same rules as kernels.optim.AdamW."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0):
        self.lr, self.betas, self.eps, self.wd, self.clip = lr, betas, eps, weight_decay, clip
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params, grads):
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        scale = self.clip / (norm + 1e-6) if norm > self.clip else 1.0
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for name, p in params.items():
            g = grads[name] * np.float32(scale)
            m = self.m.setdefault(name, np.zeros_like(p))
            v = self.v.setdefault(name, np.zeros_like(p))
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            if p.ndim >= 2:
                p *= np.float32(1 - self.lr * self.wd)
            p -= np.float32(self.lr / bc1) * m / (np.sqrt(v / np.float32(bc2)) + self.eps)
        return norm


# ---------------------------------------------------------------- plain NumPy MLP / decoding


def np_mlp_loss_and_grads(p, x, y):
    """Softmax cross-entropy of a ReLU MLP with layers ``layers.{i}.weight/bias``."""
    n_layers = sum(1 for k in p if k.endswith(".weight"))
    acts = [x]
    h = x
    for i in range(n_layers):
        h = h @ p[f"layers.{i}.weight"] + p[f"layers.{i}.bias"]
        if i < n_layers - 1:
            h = np.maximum(h, 0)
        acts.append(h)
    z = h - h.max(1, keepdims=True)
    e = np.exp(z)
    e /= e.sum(1, keepdims=True)
    rows = np.arange(len(y))
    loss = float(-np.log(e[rows, y]).mean())
    e[rows, y] -= 1
    d = e / np.float32(len(y))
    grads = {}
    for i in range(n_layers - 1, -1, -1):
        grads[f"layers.{i}.weight"] = acts[i].T @ d
        grads[f"layers.{i}.bias"] = d.sum(0)
        if i:
            d = (d @ p[f"layers.{i}.weight"].T) * (acts[i] > 0)
    return loss, grads


def np_gpt2_generate(cfg, p, prompt, max_new):
    """Greedy KV-cached decoding, batch 1, plain NumPy."""
    C, H = cfg.d_model, cfg.n_head
    hd = C // H
    K = np.zeros((cfg.n_layer, H, cfg.n_ctx, hd), np.float32)
    V = np.zeros_like(K)
    out = list(prompt)
    logits = None
    for pos in range(len(prompt) + max_new - 1):
        tok = out[pos]
        x = p["transformer.wte.weight"][tok] + p["transformer.wpe.weight"][pos]
        for i in range(cfg.n_layer):
            pre = f"transformer.h.{i}."
            h, _ = np_layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], cfg.eps)
            qkv = h @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
            q, k, v = (a.reshape(H, hd) for a in np.split(qkv, 3))
            K[i, :, pos], V[i, :, pos] = k, v
            s = np.einsum("hd,htd->ht", q, K[i, :, : pos + 1]) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("ht,htd->hd", s, V[i, :, : pos + 1]).reshape(C)
            x = x + o @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
            h, _ = np_layernorm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], cfg.eps)
            g, _ = np_gelu(h @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
            x = x + g @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
        hf, _ = np_layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], cfg.eps)
        logits = hf @ p["transformer.wte.weight"].T
        if pos + 1 >= len(out):
            out.append(int(np.argmax(logits)))
    return np.array(out, dtype=np.int32)
