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
6. PyTorch eager for 1, 3, 4 when ``torch`` imports, in a child process
   (benchmarks/core_speed_torch.py --serve) that runs its bursts in turn with
   ours and NumPy's: the machines are noisy, so every engine's burst of a
   round meets the same noise, and a ratio is the median of per-round ratios.
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


def sgemm_burst(cfg, B):
    """A burst runner: NumPy matmuls of one step's forward shapes -> FLOP/s (time-weighted)."""
    rng = np.random.default_rng(0)
    mats = []
    for m, k, n, batch, times in lm_matmul_shapes(cfg, B):
        lead = (batch,) if batch > 1 else ()
        a = rng.standard_normal((*lead, m, k), dtype=np.float32)
        b = rng.standard_normal((*lead, k, n), dtype=np.float32)
        mats.append((a, b, np.empty((*lead, m, n), dtype=np.float32), times))
    flops = step_flops(cfg, B) / 3

    def step():
        for a, b, c, times in mats:
            for _ in range(times):
                np.matmul(a, b, out=c)

    return step, flops


def step_flops(cfg, B):
    """Matmul FLOPs of forward + backward (backward = 2x forward)."""
    return 3 * sum(2 * m * k * n * b * t for m, k, n, b, t in lm_matmul_shapes(cfg, B))


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


def lm_workloads(args, out):
    """Step callables of the LM training and generation workloads, ours and NumPy's."""
    from kernels.infer import generate
    from kernels.optim import AdamW
    from kernels.parallel import DataParallel

    cfg, model, params, batch = ours_lm(args)
    dp = DataParallel(model, args.threads)
    loss_diff, grad_diff = check_same_step(model, cfg, params, batch)
    out["lm_config"] = {**LM, "batch": LM_BATCH, "family": "gpt2"}
    out["lm_numpy_check"] = {"loss_abs_diff": loss_diff, "grad_max_rel_diff": grad_diff}
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

    prompt = batch[0, :8].copy()
    max_new = cfg.n_ctx - len(prompt)
    ours_tokens = generate(model, params, prompt, max_new)
    np_tokens = np_gpt2_generate(cfg, params, prompt.tolist(), max_new)
    out["generation_check"] = {
        "batch": 1,
        "new_tokens_per_call": max_new,
        "same_tokens_as_numpy": bool(np.array_equal(ours_tokens, np_tokens)),
    }
    tokens = LM_BATCH * cfg.n_ctx
    return cfg, {
        "lm_train": (tokens, args.inner, {"ours": step_ours, "numpy": step_np}),
        "generation": (max_new, 1, {
            "ours": lambda: generate(model, params, prompt, max_new),
            "numpy": lambda: np_gpt2_generate(cfg, params, prompt.tolist(), max_new),
        }),
    }  # fmt: skip


def mlp_workload(args):
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

    return MLP_BATCH, args.inner * 10, {"ours": step_ours, "numpy": step_np}


class TorchServer:
    """benchmarks/core_speed_torch.py --serve in a child process (torch stays out of ours)."""

    def __init__(self, threads: int):
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("core_speed_torch.py")),
             "--serve", "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError("the PyTorch baseline process exited before it was ready")
        self.info = json.loads(first)

    def burst(self, name: str, calls: int) -> float:
        self.proc.stdin.write(f"{name} {calls}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def local_burst(fn, units):
    """A burst runner for a step callable of this process: calls -> units/s."""

    def burst(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return units * calls / (time.perf_counter() - t0)

    return burst


def interleaved(calls, bursts, rounds, settle):
    """Rates per engine over ``rounds`` rounds of one burst each, engines in turn.

    ``bursts`` maps an engine to its runner (calls -> units/s). Every engine gets
    one untimed warm-up call. Between bursts the machine rests ``settle`` seconds,
    so BLAS and OpenMP threads left spinning by the previous engine have gone to
    sleep before the next one starts.
    """
    for burst in bursts.values():
        burst(1)
    rates: dict[str, list[float]] = {name: [] for name in bursts}
    for _ in range(rounds):
        for name, burst in bursts.items():
            time.sleep(settle)
            rates[name].append(burst(calls))
    return rates


def summarize(rates):
    """Median rate per engine, the median of per-round ratios ours / other, and the
    lowest and highest per-round ratio (what the machine's noise did to the figure)."""
    out = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        if name not in ("ours", "sgemm"):
            per_round = [a / b for a, b in zip(rates["ours"], r, strict=True)]
            out[f"ours_over_{name}"] = statistics.median(per_round)
            out[f"ours_over_{name}_range"] = [min(per_round), max(per_round)]
    return out


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
workers = int(sys.argv[2])
engine_threads(workers)
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


def bench_all(args, out):
    """Every workload, all engines interleaved round by round (PyTorch when it imports)."""
    cfg, loads = lm_workloads(args, out)
    loads["mlp_train"] = mlp_workload(args)
    sgemm, sgemm_flops = sgemm_burst(cfg, LM_BATCH)
    torch = None
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        torch = TorchServer(args.threads)
        out["torch"] = torch.info
    else:
        out["torch"] = "not installed (optional: pip install torch==2.13.0); skipped"
    rounds = {}
    try:
        for name, (units, calls, engines) in loads.items():
            bursts = {engine: local_burst(fn, units) for engine, fn in engines.items()}
            if torch is not None:
                bursts["torch"] = lambda n, name=name: torch.burst(name, n)
            if name == "lm_train":  # the ceiling, measured in the same rounds
                bursts["sgemm"] = local_burst(sgemm, sgemm_flops)
            rounds[name] = interleaved(calls, bursts, args.repeats, args.settle)
            out[name] = summarize(rounds[name])
    finally:
        if torch is not None:
            torch.close()
    tokens = LM_BATCH * cfg.n_ctx
    flops = step_flops(cfg, LM_BATCH)
    ceiling = out["lm_train"].pop("sgemm")
    out["lm_flops"] = {
        "step_matmul_flops": flops,
        "numpy_sgemm_flop_per_s_at_model_shapes": ceiling,
    }
    lm_rounds = rounds["lm_train"]
    for engine in ("ours", "numpy", "torch"):
        if engine in lm_rounds:
            fractions = [
                flops * r / tokens / c
                for r, c in zip(lm_rounds[engine], lm_rounds["sgemm"], strict=True)
            ]
            out["lm_flops"][f"{engine}_flop_per_s"] = flops * out["lm_train"][engine] / tokens
            out["lm_flops"][f"{engine}_fraction_of_sgemm"] = statistics.median(fractions)
    if torch is not None:
        # The goal in the ceiling's units: 1.5x PyTorch's step rate means running the
        # step's matmul FLOPs at 1.5x PyTorch's achieved FLOP/s.
        out["lm_flops"]["needed_for_1_5x_torch_fraction_of_sgemm"] = (
            1.5 * out["lm_flops"]["torch_fraction_of_sgemm"]
        )


def _vs(w, name):
    ratio = w.get(f"ours_over_{name}")
    if ratio is None:
        return ""
    lo, hi = w.get(f"ours_over_{name}_range", (ratio, ratio))
    return f"{name} {w[name]:,.0f} (ours {ratio:.2f}x, rounds {lo:.2f}-{hi:.2f})"


def report(out):
    lm, gen, mlp = out["lm_train"], out["generation"], out["mlp_train"]
    fl = out["lm_flops"]
    fs = out["new_process_warm_cache"]
    has_torch = "torch" in lm
    g = 1e9
    ceiling = fl["numpy_sgemm_flop_per_s_at_model_shapes"]
    frac = {e: fl[f"{e}_fraction_of_sgemm"] for e in ("ours", "numpy", "torch") if e in lm}
    lines = [
        f"threads: {out['threads']} (ours: {out['threads']} data-parallel workers over "
        f"single-threaded BLAS)  OPENBLAS_CORETYPE={out['openblas_coretype']}",
        f"medians of {out['repeats']} interleaved rounds; ratios are medians of per-round ratios "
        "(with the lowest and highest round)",
        f"tiny-LM train (gpt2 {LM}, batch {LM_BATCH}), tokens/s: ours {lm['ours']:,.0f}   "
        + "   ".join(_vs(lm, n) for n in ("numpy", "torch") if n in lm),
        f"  matmul GFLOP/s: ours {fl['ours_flop_per_s'] / g:.1f}, numpy step "
        f"{fl['numpy_flop_per_s'] / g:.1f}"
        + (f", torch step {fl['torch_flop_per_s'] / g:.1f}" if has_torch else "")
        + f"; numpy sgemm at the model's shapes {ceiling / g:.1f} (the ceiling, same rounds)",
        "  share of the ceiling: " + ", ".join(f"{e} {f:.0%}" for e, f in frac.items()),
    ]
    if has_torch:
        need = fl["needed_for_1_5x_torch_fraction_of_sgemm"]
        lines.append(
            f"  1.5x torch needs {need:.0%} of the ceiling for the whole step: with matmuls "
            f"at the ceiling, {max(0.0, 1 - need):.0%} of the step's time would be left for "
            f"everything else (softmax, norms, GELU, attention, AdamW)"
        )
    lines += [
        f"KV-cached generation, batch 1, tokens/s: ours {gen['ours']:,.0f}   "
        + "   ".join(_vs(gen, n) for n in ("numpy", "torch") if n in gen)
        + f"   (same tokens as numpy: {out['generation_check']['same_tokens_as_numpy']})",
        f"MLP {MLP_SIZES} train, batch {MLP_BATCH}, examples/s: ours {mlp['ours']:,.0f}   "
        + "   ".join(_vs(mlp, n) for n in ("numpy", "torch") if n in mlp),
        f"new process, warm numba cache: imports {fs['import_s']:.2f}s, first step "
        f"{fs['first_step_s']:.3f}s vs steady {fs['steady_step_s']:.3f}s -> compile overhead "
        f"{fs['compile_overhead_s']:.3f}s; to first step {fs['to_first_step_s']:.2f}s",
    ]
    if not has_torch:
        lines.append(f"torch: {out['torch']}")
    core = out.get("openblas_coretype")
    if core and "avx512f" in out["machine"]["flags"] and not core.lower().startswith(
        ("skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5")
    ):
        lines.append(
            f"note: OPENBLAS_CORETYPE={core} holds OpenBLAS (NumPy's and numba's BLAS, so "
            "ours) to kernels without AVX-512 on a CPU that has it; PyTorch's MKL is not "
            "held. Compare a run under `env -u OPENBLAS_CORETYPE` (it changes float "
            "rounding too: the trainer records the setting in every checkpoint)"
        )
    return "\n".join(lines)


FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def machine_info():
    """What explains a figure: the CPU and its vector flags, the BLAS of NumPy, numba and
    PyTorch (with oneDNN), and the thread settings."""
    info = {"cpu": "unknown", "flags": [], "logical_cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and info["cpu"] == "unknown":
                info["cpu"] = value.strip()
            elif key.strip() in ("cpu family", "model") and key.strip() not in info:
                info[key.strip()] = value.strip()  # a virtual "AMD EPYC" is Zen 2 to 5
            elif key.strip() == "flags" and not info["flags"]:
                have = set(value.split())
                info["flags"] = [f for f in FLAGS if f in have]
    except OSError:
        pass
    import numba
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception as exc:  # noqa: BLE001 - informational
        info["numpy_blas"] = f"unknown ({type(exc).__name__})"
    info["numpy"] = np.__version__
    info["numba"] = numba.__version__
    try:
        from numba.np.ufunc import parallel as _parallel

        info["numba_threading_layer"] = _parallel._get_threading_layer_name()  # noqa: SLF001
    except Exception:  # noqa: BLE001 - before any parallel kernel ran, or an older numba
        info["numba_threading_layer"] = "not started"
    probe = (
        "import torch, json; c = torch.__config__.show();"
        "print(json.dumps({'torch': torch.__version__, 'mkl': torch.backends.mkl.is_available(),"
        "'mkldnn': torch.backends.mkldnn.is_available(),"
        "'blas': [t.split(': ')[-1].strip() for t in c.replace(chr(10), ',').split(',')"
        " if t.split(': ')[-1].strip().startswith(('BLAS_INFO', 'LAPACK_INFO', 'USE_MKLDNN',"
        " 'PERF_WITH_AVX'))]}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    info["torch"] = json.loads(proc.stdout) if proc.returncode == 0 else "not importable"
    info["threads_env"] = {
        k: v for k, v in sorted(os.environ.items())
        if k.endswith("_NUM_THREADS") or k in ("OPENBLAS_CORETYPE", "NUMBA_THREADING_LAYER")
    }  # fmt: skip
    return info


def log_results(out):
    """Append this run to ``benchmarks/results/<cpu>-cpu-family-F-model-M.json``, so that a
    change is judged against figures from the same CPU model."""
    import datetime as _dt
    import re

    m = out["machine"]
    # the model name alone can hide the generation (a cloud's "AMD EPYC"): family and model
    cpu = " ".join([m["cpu"], *(f"{k} {m[k]}" for k in ("cpu family", "model") if k in m)])
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") or "unknown"
    path = ROOT / "benchmarks" / "results" / f"{slug}.json"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        history = []
    history.append({
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        **out,
    })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(history, indent=1) + "\n")
    return path


def describe_machine(m):
    torch = m["torch"]
    torch_text = (
        f"torch {torch['torch']} (MKL {torch['mkl']}, oneDNN {torch['mkldnn']}; "
        + "; ".join(torch["blas"]) + ")"
        if isinstance(torch, dict)
        else f"torch {torch}"
    )
    flags = " ".join(m["flags"]) or "none of " + "/".join(FLAGS)
    return (
        f"CPU: {m['cpu']} (family {m.get('cpu family', '?')} model {m.get('model', '?')}; "
        f"{m['logical_cpus']} logical; flags: {flags})\n"
        f"numpy {m['numpy']} BLAS {m['numpy_blas']}; numba {m['numba']} (threading layer "
        f"{m['numba_threading_layer']}); {torch_text}\n"
        f"thread settings: {m['threads_env'] or 'none set'}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--inner", type=int, default=5, help="LM steps per timed burst")
    ap.add_argument("--settle", type=float, default=0.2, help="seconds of rest between bursts")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-log", action="store_true", help="do not append to benchmarks/results/")
    args = ap.parse_args(argv)
    from kernels.parallel import engine_threads, set_blas_threads

    engine_threads(args.threads)  # ours: single-threaded BLAS, args.threads workers
    set_blas_threads(args.threads, ("numpy",))  # the NumPy baseline: N-threaded BLAS
    out = {
        "threads": args.threads,
        "repeats": args.repeats,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
    out["machine"] = machine_info()
    bench_all(args, out)
    bench_first_step(args, out)
    logged = None if args.no_log else log_results(out)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(describe_machine(out["machine"]))
        print(report(out))
        if logged is not None:
            print(f"logged to {logged.relative_to(ROOT)} (compare runs of the same CPU model)")


if __name__ == "__main__":
    main()
