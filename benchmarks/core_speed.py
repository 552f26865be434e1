"""Speed of the numba core against plain NumPy (and PyTorch eager when importable).

Run: ``.venv/bin/python benchmarks/core_speed.py [--threads N] [--repeats R] [--json]``

Measured in one run, medians of R repeats, same threads for every engine
(ours as the trainer runs them, ``kernels.parallel.engine_threads``: N
data-parallel workers over single-threaded BLAS; NumPy and PyTorch with
N-threaded BLAS / intra-op threads):

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


from kernels.baseline import (  # noqa: E402
    NumpyAdamW,
    np_gpt2_generate,
    np_gpt2_loss_and_grads,
    np_mlp_loss_and_grads,
)

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
    from kernels.parallel import DataParallel

    cfg, model, params, batch = ours_lm(args)
    dp = DataParallel(model, args.threads)
    loss_diff, grad_diff = check_same_step(model, cfg, params, batch)
    out["lm_config"] = {**LM, "batch": LM_BATCH, "family": "gpt2"}
    out["lm_numpy_check"] = {"loss_abs_diff": loss_diff, "grad_max_rel_diff": grad_diff}
    tokens = LM_BATCH * cfg.n_ctx
    p_ours = {k: v.copy() for k, v in params.items()}
    opt = AdamW(lr=1e-4)

    def step_ours():
        _, g = dp.loss_and_grads(p_ours, batch)
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
    from kernels.parallel import DataParallel

    model = MLPClassifier(MLPConfig(n_in=64, hidden=MLP_SIZES[1:-1], n_out=10))
    dp = DataParallel(model, args.threads)  # one call below 2 x model.min_rows_per_worker rows
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
        _, g = dp.loss_and_grads(p1, x, y)
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
from kernels.parallel import DataParallel, engine_threads
workers = engine_threads(int(sys.argv[2]))
t_import = time.perf_counter()
cfg = ModelConfig(family="gpt2", **json.loads(sys.argv[3]))
model = DataParallel(build_model(cfg), workers)
params = model.model.init_params(0)
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
    from kernels.parallel import engine_threads, set_blas_threads

    engine_threads(args.threads)  # ours: single-threaded BLAS, args.threads workers
    set_blas_threads(args.threads, ("numpy",))  # the NumPy baseline: N-threaded BLAS
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
