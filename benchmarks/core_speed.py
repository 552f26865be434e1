"""Speed of the numba core against plain NumPy (and PyTorch eager when importable).

Run: ``.venv/bin/python benchmarks/core_speed.py [--threads N] [--repeats R] [--json]``

Measured in one run, medians of R repeats, same threads for every engine:

1. tiny-LM training step (gpt2 tiny: 2 layers, d_model 128, 4 heads, n_ctx 64,
   vocab 1024, batch 16): forward + backward + AdamW, tokens/s, ours vs a plain
   NumPy implementation of the same step (checked to give the same loss and
   gradients before timing);
2. achieved matmul FLOP/s of that step next to NumPy sgemm FLOP/s at the
   model's matmul shapes (the practical ceiling);
3. KV-cached generation at batch 1, tokens/s, ours vs a NumPy KV-cached decoder;
4. MLP classifier training step (64-128-64-10, batch 128), ours vs NumPy;
5. compile overhead of a new process with a warm numba cache: time to its
   first training step, minus a steady-state step;
6. PyTorch eager for 1, 3, 4 in its own subprocess when ``torch`` imports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

GELU_C = math.sqrt(2.0 / math.pi)
LM = dict(n_layer=2, d_model=128, n_head=4, n_ctx=64, vocab_size=1024)
LM_BATCH = 16
MLP_SIZES = (64, 128, 64, 10)
MLP_BATCH = 128


def median_rate(fn, units: float, repeats: int, inner: int) -> float:
    """Median over ``repeats`` of units*inner / seconds for ``inner`` calls of fn."""
    fn()  # warm up (compile / caches)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rates.append(units * inner / (time.perf_counter() - t0))
    return statistics.median(rates)


# ---------------------------------------------------------------- plain NumPy GPT-2 step


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
    n_layers = len(MLP_SIZES) - 1
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


# ---------------------------------------------------------------- FLOP accounting


def lm_matmul_shapes(cfg, B):
    """(m, k, n, batch, times) of one step's forward matmuls; attention counted in full."""
    C, T, H, L = cfg.d_model, cfg.n_ctx, cfg.n_head, cfg.n_layer
    hd = C // H
    return [
        (B * T, C, 3 * C, 1, L), (T, hd, T, B * H, L), (T, T, hd, B * H, L),
        (B * T, C, C, 1, L), (B * T, C, cfg.d_ff, 1, L), (B * T, cfg.d_ff, C, 1, L),
        (B * T, C, cfg.vocab_size, 1, 1),
    ]  # fmt: skip


def step_flops(cfg, B):
    """Matmul FLOPs of forward + backward (backward = 2x forward)."""
    return 3 * sum(2 * m * k * n * b * t for m, k, n, b, t in lm_matmul_shapes(cfg, B))


def sgemm_ceiling(cfg, B, repeats):
    """NumPy sgemm FLOP/s over the step's matmul shapes (time-weighted), and per shape."""
    rng = np.random.default_rng(0)
    total_flops, total_time, per_shape = 0.0, 0.0, {}
    for m, k, n, batch, times in lm_matmul_shapes(cfg, B):
        lead = (batch,) if batch > 1 else ()
        a = rng.standard_normal((*lead, m, k), dtype=np.float32)
        b = rng.standard_normal((*lead, k, n), dtype=np.float32)
        flops = 2.0 * m * k * n * batch
        inner = max(1, int(2e8 // flops))
        rate = median_rate(lambda a=a, b=b: np.matmul(a, b), flops, repeats, inner)
        per_shape[f"{m}x{k}x{n}" + (f" x{batch}" if batch > 1 else "")] = rate
        total_flops += flops * times
        total_time += flops * times / rate
    return total_flops / total_time, per_shape


# ---------------------------------------------------------------- our engine


def ours_lm(args):
    from kernels.config import ModelConfig
    from kernels.models.registry import build_model

    cfg = ModelConfig(family="gpt2", **LM)
    model = build_model(cfg)
    params = model.init_params(0)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, cfg.vocab_size, (LM_BATCH, cfg.n_ctx + 1)).astype(np.int32)
    return cfg, model, params, batch


def check_same_step(model, cfg, params, batch):
    loss_a, g_a = model.loss_and_grads(params, batch)
    loss_b, g_b = np_gpt2_loss_and_grads(cfg, params, batch)
    worst = max(float(np.abs(g_a[k] - g_b[k]).max() / (np.abs(g_b[k]).max() + 1e-12)) for k in g_a)
    if abs(loss_a - loss_b) > 1e-4 * abs(loss_b) or worst > 1e-3:
        raise SystemExit(f"NumPy step differs from ours: loss {loss_a} vs {loss_b}, grad {worst}")
    return abs(loss_a - loss_b), worst


def bench_lm(args, out):
    from kernels.optim import AdamW

    cfg, model, params, batch = ours_lm(args)
    loss_diff, grad_diff = check_same_step(model, cfg, params, batch)
    out["lm_config"] = {**LM, "batch": LM_BATCH, "family": "gpt2"}
    out["lm_numpy_check"] = {"loss_abs_diff": loss_diff, "grad_max_rel_diff": grad_diff}
    tokens = LM_BATCH * cfg.n_ctx
    p_ours = {k: v.copy() for k, v in params.items()}
    opt = AdamW(lr=1e-4)

    def step_ours():
        _, g = model.loss_and_grads(p_ours, batch)
        opt.step(p_ours, g, lr=1e-4)

    p_np = {k: v.copy() for k, v in params.items()}
    opt_np = NumpyAdamW(lr=1e-4)

    def step_np():
        _, g = np_gpt2_loss_and_grads(cfg, p_np, batch)
        opt_np.step(p_np, g)

    out["lm_train_tokens_per_s"] = {
        "ours": median_rate(step_ours, tokens, args.repeats, args.inner),
        "numpy": median_rate(step_np, tokens, args.repeats, args.inner),
    }
    flops = step_flops(cfg, LM_BATCH)
    ceiling, per_shape = sgemm_ceiling(cfg, LM_BATCH, args.repeats)
    steps_per_s = out["lm_train_tokens_per_s"]["ours"] / tokens
    out["lm_flops"] = {
        "step_matmul_flops": flops,
        "ours_flop_per_s": flops * steps_per_s,
        "numpy_step_flop_per_s": flops * out["lm_train_tokens_per_s"]["numpy"] / tokens,
        "numpy_sgemm_flop_per_s_at_model_shapes": ceiling,
        "sgemm_per_shape": per_shape,
    }

    prompt = batch[0, :8].copy()
    max_new = cfg.n_ctx - len(prompt)
    from kernels.infer import generate

    ours_tokens = generate(model, params, prompt, max_new)
    np_tokens = np_gpt2_generate(cfg, params, prompt.tolist(), max_new)
    out["generation"] = {
        "batch": 1,
        "new_tokens_per_call": max_new,
        "same_tokens_as_numpy": bool(np.array_equal(ours_tokens, np_tokens)),
        "ours": median_rate(lambda: generate(model, params, prompt, max_new), max_new,
                            args.repeats, 1),
        "numpy": median_rate(lambda: np_gpt2_generate(cfg, params, prompt.tolist(), max_new),
                             max_new, args.repeats, 1),
    }  # fmt: skip


def bench_mlp(args, out):
    from kernels.config import MLPConfig
    from kernels.models.mlp import MLPClassifier
    from kernels.optim import AdamW

    model = MLPClassifier(MLPConfig(n_in=64, hidden=MLP_SIZES[1:-1], n_out=10))
    params = model.init_params(0)
    rng = np.random.default_rng(0)
    x = rng.random((MLP_BATCH, 64), dtype=np.float32)
    y = rng.integers(0, 10, MLP_BATCH)
    la, ga = model.loss_and_grads(params, x, y)
    lb, gb = np_mlp_loss_and_grads(params, x, y)
    assert abs(la - lb) < 1e-4 and all(np.allclose(ga[k], gb[k], atol=1e-5) for k in ga)
    p1, p2 = (
        dict((k, v.copy()) for k, v in params.items()),
        dict((k, v.copy()) for k, v in params.items()),
    )
    opt, opt_np = AdamW(lr=1e-3), NumpyAdamW(lr=1e-3)

    def step_ours():
        _, g = model.loss_and_grads(p1, x, y)
        opt.step(p1, g, lr=1e-3)

    def step_np():
        _, g = np_mlp_loss_and_grads(p2, x, y)
        opt_np.step(p2, g)

    out["mlp_train_examples_per_s"] = {
        "sizes": list(MLP_SIZES),
        "batch": MLP_BATCH,
        "ours": median_rate(step_ours, MLP_BATCH, args.repeats, args.inner * 10),
        "numpy": median_rate(step_np, MLP_BATCH, args.repeats, args.inner * 10),
    }


FIRST_STEP = r"""
import time
t0 = time.perf_counter()
import sys, json
sys.path.insert(0, sys.argv[1])
import numpy as np
from kernels.config import ModelConfig
from kernels.models.registry import build_model
from kernels.optim import AdamW
from kernels.train import limit_threads
limit_threads(int(sys.argv[2]))
t_import = time.perf_counter()
cfg = ModelConfig(family="gpt2", **json.loads(sys.argv[3]))
model = build_model(cfg)
params = model.init_params(0)
batch = np.random.default_rng(0).integers(0, cfg.vocab_size, (16, cfg.n_ctx + 1)).astype(np.int32)
opt = AdamW(lr=1e-4)
times = []
for _ in range(6):
    t = time.perf_counter()
    _, g = model.loss_and_grads(params, batch)
    opt.step(params, g, lr=1e-4)
    times.append(time.perf_counter() - t)
print(json.dumps({"import_s": t_import - t0, "first_step_s": times[0],
                  "steady_step_s": sorted(times[1:])[len(times[1:]) // 2],
                  "to_first_step_s": t_import - t0 + times[0]}))
"""


def bench_first_step(args, out):
    env = {**os.environ}
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-c", FIRST_STEP, str(ROOT), str(args.threads), json.dumps(LM)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        r = json.loads(res.stdout)
        r["process_wall_to_exit_s"] = wall
        r["compile_overhead_s"] = r["first_step_s"] - r["steady_step_s"]
        runs.append(r)
    out["new_process_warm_cache"] = {
        k: statistics.median(r[k] for r in runs) for k in runs[0]
    }  # fmt: skip


def bench_torch(args, out):
    """Run benchmarks/core_speed_torch.py in its own process when torch imports."""
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        out["torch"] = "not installed (optional: pip install torch==2.13.0); skipped"
        return
    res = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("core_speed_torch.py")),
         "--threads", str(args.threads), "--repeats", str(args.repeats),
         "--inner", str(args.inner)],
        capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        out["torch"] = f"failed: {res.stderr.strip().splitlines()[-1:]}"
        return
    out["torch"] = json.loads(res.stdout)


def report(out):
    lm = out["lm_train_tokens_per_s"]
    fl = out["lm_flops"]
    gen = out["generation"]
    mlp = out["mlp_train_examples_per_s"]
    fs = out["new_process_warm_cache"]
    torch = out["torch"] if isinstance(out["torch"], dict) else None
    g = 1e9
    lines = [
        f"threads: {out['threads']}  OPENBLAS_CORETYPE={out['openblas_coretype']}  "
        f"repeats: {out['repeats']} (medians)",
        f"tiny-LM train (gpt2 {LM}, batch {LM_BATCH}), tokens/s:",
        f"  ours {lm['ours']:,.0f}   numpy {lm['numpy']:,.0f}   "
        f"ratio {lm['ours'] / lm['numpy']:.2f}x",
        f"  achieved {fl['ours_flop_per_s'] / g:.1f} GFLOP/s (numpy step "
        f"{fl['numpy_step_flop_per_s'] / g:.1f}); numpy sgemm at the model's shapes "
        f"{fl['numpy_sgemm_flop_per_s_at_model_shapes'] / g:.1f} GFLOP/s -> "
        f"{fl['ours_flop_per_s'] / fl['numpy_sgemm_flop_per_s_at_model_shapes']:.0%} of it",
        f"KV-cached generation, batch 1, tokens/s: ours {gen['ours']:,.0f}   numpy "
        f"{gen['numpy']:,.0f}   ratio {gen['ours'] / gen['numpy']:.2f}x   "
        f"(same tokens: {gen['same_tokens_as_numpy']})",
        f"MLP {tuple(mlp['sizes'])} train, batch {mlp['batch']}, examples/s: ours "
        f"{mlp['ours']:,.0f}   numpy {mlp['numpy']:,.0f}   ratio {mlp['ours'] / mlp['numpy']:.2f}x",
        f"new process, warm numba cache: imports {fs['import_s']:.2f}s, first step "
        f"{fs['first_step_s']:.3f}s vs steady {fs['steady_step_s']:.3f}s -> compile overhead "
        f"{fs['compile_overhead_s']:.3f}s; to first step {fs['to_first_step_s']:.2f}s",
    ]
    if torch:
        lines += [
            f"torch eager: LM train {torch['lm_train_tokens_per_s']:,.0f} tok/s "
            f"(ours {lm['ours'] / torch['lm_train_tokens_per_s']:.2f}x), generation "
            f"{torch['generation_tokens_per_s']:,.0f} tok/s "
            f"(ours {gen['ours'] / torch['generation_tokens_per_s']:.2f}x), MLP "
            f"{torch['mlp_train_examples_per_s']:,.0f} ex/s "
            f"(ours {mlp['ours'] / torch['mlp_train_examples_per_s']:.2f}x)"
        ]
    else:
        lines.append(f"torch: {out['torch']}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=5, help="steps per timed repeat")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from kernels.train import limit_threads

    limit_threads(args.threads)
    out = {
        "threads": args.threads,
        "repeats": args.repeats,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
    bench_lm(args, out)
    bench_mlp(args, out)
    bench_first_step(args, out)
    bench_torch(args, out)
    print(json.dumps(out, indent=1) if args.json else report(out))


if __name__ == "__main__":
    main()
