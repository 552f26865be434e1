"""Import hygiene and the benchmark's NumPy baseline (it must compute the same step)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.core.helpers import micro_model

ROOT = Path(__file__).resolve().parents[2]


def test_importing_kernels_and_the_cli_does_not_import_numba():
    code = (
        "import sys, kernels, kernels.cli, kernels.checkpoint, kernels.train; "
        "print('numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "core_speed", ROOT / "benchmarks" / "core_speed.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_numpy_step_equals_ours():
    bench = load_benchmark()
    model = micro_model("gpt2", vocab_size=50)
    params = model.init_params(0)
    batch = np.random.default_rng(1).integers(0, 50, (3, 17)).astype(np.int32)
    loss_diff, grad_diff = bench.check_same_step(model, model.config, params, batch)
    assert loss_diff < 1e-5 and grad_diff < 1e-4
    assert bench.step_flops(model.config, 3) > 0


def test_benchmark_numpy_decoder_matches_generate():
    from kernels.infer import generate

    bench = load_benchmark()
    model = micro_model("gpt2", vocab_size=50)
    params = model.init_params(2)
    prompt = np.array([1, 2, 3], dtype=np.int32)
    ours = generate(model, params, prompt, 10)
    theirs = bench.np_gpt2_generate(model.config, params, prompt.tolist(), 10)
    assert ours.tolist() == theirs.tolist()


def test_benchmark_interleaves_engines_and_takes_per_round_ratios():
    bench = load_benchmark()
    order = []

    def engine(name, rates):
        it = iter(rates)

        def burst(calls):
            order.append(name)
            return next(it)

        return burst

    rates = bench.interleaved(
        3, {"ours": engine("ours", [0, 10, 30, 20]), "torch": engine("torch", [0, 5, 10, 40])},
        rounds=3, settle=0.0,
    )  # fmt: skip
    assert order == ["ours", "torch"] * 4  # one warm-up burst each, then rounds in turn
    summary = bench.summarize(rates)
    assert summary["ours"] == 20 and summary["torch"] == 10
    assert summary["ours_over_torch"] == 2.0  # median of 2.0, 3.0, 0.5
