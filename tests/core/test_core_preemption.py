"""Preemption: SIGKILL a training process, resume from `latest`, end byte-identical.

Each run is a real subprocess killed with SIGKILL: after a chosen step (watching
metrics.jsonl), and from inside a checkpoint write (a fault hook that kills the
process half-way through writing a file).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernels import checkpoint as ck
from tests.core.helpers import MICRO

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CFG = dict(family="gpt2", model=MICRO, seed=3, steps=12, batch_size=4, eval_every=3,
           ckpt_every=3, eval_windows=8, warmup=2)  # fmt: skip

DRIVER = r"""
import json, os, signal, sys, time
from kernels import checkpoint
from kernels.train import TrainConfig, train

cfg = TrainConfig.from_dict(json.loads(sys.argv[2]))
kill_in_write = int(sys.argv[3])  # step whose checkpoint write is killed half-way, or -1

if kill_in_write >= 0:
    real = checkpoint.atomic_write_bytes

    def dying_write(path, data):
        if f"ckpt-{kill_in_write:06d}" in str(path) and str(path).endswith("trainer.json"):
            with open(path, "wb") as fh:  # a torn, non-atomic half-write, then death
                fh.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data)

    checkpoint.atomic_write_bytes = dying_write

train(cfg, sys.argv[1], resume=True, progress=lambda step, total, rec: time.sleep(0.03))
"""


def start(run: Path, kill_in_write: int = -1) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(run), json.dumps(CFG), str(kill_in_write)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def last_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=-1)


def kill_after_step(run: Path, step: int) -> None:
    proc = start(run)
    deadline = time.monotonic() + 120
    while last_step(run) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    finish(start(run))
    return run


def final_files(run: Path) -> dict[str, bytes]:
    latest = ck.latest_checkpoint(run)
    assert latest.name == "ckpt-000012"
    return {name: (latest / name).read_bytes() for name in (ck.MODEL_FILE, ck.OPTIMIZER_FILE)}


@pytest.mark.parametrize("kill_steps", [(1,), (4,), (7, 10), (2, 3, 9)])
def test_sigkill_after_steps_then_resume_is_byte_identical(tmp_path, reference, kill_steps):
    run = tmp_path / "run"
    for step in kill_steps:
        kill_after_step(run, step)
    finish(start(run))
    assert final_files(run) == final_files(reference)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(13))  # metrics of the killed tail were rewound, not duplicated


@pytest.mark.parametrize("kill_in_write", [3, 9])
def test_sigkill_during_checkpoint_write_then_resume(tmp_path, reference, kill_in_write):
    run = tmp_path / "run"
    proc = start(run, kill_in_write)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    latest = ck.latest_checkpoint(run)
    assert latest is None or latest.name < f"ckpt-{kill_in_write:06d}"
    finish(start(run))
    assert final_files(run) == final_files(reference)
