"""The kill switch of the trainer: a stop request (SIGTERM, SIGINT) ends a run after the
step in progress, at a complete checkpoint of it, and the run resumes to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import kernels.train as t
from kernels import checkpoint as ck
from kernels.cli import core
from kernels.train import EXIT_STOPPED, StopFlag, TrainConfig, stop_on_signals, train
from tests.core.helpers import MICRO

ROOT = Path(__file__).resolve().parents[2]
CFG = dict(family="gpt2", model=MICRO, seed=4, steps=10, batch_size=4, eval_every=3,
           ckpt_every=4, eval_windows=8, warmup=2)  # fmt: skip


def config() -> TrainConfig:
    return TrainConfig(**CFG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("stop-ref") / "run"
    train(config(), run)
    return run


def final_bytes(run: Path) -> dict[str, bytes]:
    latest = ck.latest_checkpoint(run)
    assert latest is not None and latest.name == "ckpt-000010"
    return {n: (latest / n).read_bytes() for n in (ck.MODEL_FILE, ck.OPTIMIZER_FILE)}


def stop_during_step(stop: StopFlag, step: int, monkeypatch, signum: int | None = None):
    """Request the stop from inside step ``step`` (after its batch was drawn)."""
    real = t.accumulate_gradients
    calls = {"n": 0}

    def accumulate(task, params, micro_batches):
        calls["n"] += 1
        if calls["n"] == step:
            if signum is None:
                stop.request()
            else:
                os.kill(os.getpid(), signum)
        return real(task, params, micro_batches)

    monkeypatch.setattr(t, "accumulate_gradients", accumulate)


@pytest.mark.parametrize("step", [3, 4])  # 4: a periodic checkpoint's step
def test_stop_request_ends_the_run_at_a_checkpoint_of_that_step(tmp_path, reference, step,
                                                                 monkeypatch):  # fmt: skip
    run = tmp_path / "run"
    stop = StopFlag()
    stop_during_step(stop, step, monkeypatch)
    result = train(config(), run, stop=stop)
    assert result.stopped and result.step == step
    assert result.checkpoint == run / ck.checkpoint_name(step)
    assert ck.latest_checkpoint(run) == result.checkpoint
    loaded = ck.load_checkpoint(run, with_state=True)  # verifies the digests
    assert loaded.step == loaded.trainer["step"] == int(loaded.optimizer["step"]) == step
    assert not (run / t.RESULT_FILE).exists()  # a stopped run is not finished
    assert not list(run.glob(".ckpt-*.partial"))
    steps = [r["step"] for r in t.read_metrics(run / t.METRICS_FILE)]
    assert steps == list(range(step + 1))
    monkeypatch.undo()
    resumed = train(config(), run, resume=True)
    assert not resumed.stopped and resumed.step == 10
    assert final_bytes(run) == final_bytes(reference)
    ref_metrics = [
        {k: v for k, v in r.items() if k != "tokens_per_s"}
        for r in t.read_metrics(reference / t.METRICS_FILE)
    ]
    got = [
        {k: v for k, v in r.items() if k != "tokens_per_s"}
        for r in t.read_metrics(run / t.METRICS_FILE)
    ]
    assert got == ref_metrics


def test_a_stop_checkpoint_between_evaluations_carries_no_stale_val_loss(tmp_path, monkeypatch):
    stop = StopFlag()
    stop_during_step(stop, 2, monkeypatch)  # eval_every 3: step 2 is not evaluated
    train(config(), tmp_path / "run", stop=stop)
    loaded = ck.load_checkpoint(tmp_path / "run")
    assert loaded.step == 2 and loaded.val_loss is None


def test_a_stop_at_the_last_step_finishes_the_run(tmp_path, monkeypatch):
    stop = StopFlag()
    stop_during_step(stop, 10, monkeypatch)
    result = train(config(), tmp_path / "run", stop=stop)
    assert not result.stopped and result.step == 10
    assert (tmp_path / "run" / t.RESULT_FILE).is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_set_the_flag_and_the_old_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signum)
        time.sleep(0.01)
        assert stop.is_set() and stop.signum == signum
        assert stop.signal_name == signal.Signals(signum).name
        with pytest.raises(KeyboardInterrupt):  # a second signal aborts at once
            os.kill(os.getpid(), signum)
            time.sleep(0.01)
    assert signal.getsignal(signum) is before


def test_core_train_exits_75_on_sigterm_and_core_resume_finishes(tmp_path, reference,
                                                                  monkeypatch):  # fmt: skip
    run = tmp_path / "run"
    stop_during_step(StopFlag(), 5, monkeypatch, signum=signal.SIGTERM)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(config().to_dict()))
    out = CliRunner().invoke(core, ["train", "--out", str(run), "--config", str(cfg_file)])
    assert out.exit_code == EXIT_STOPPED == 75, out.output
    assert "stopped by SIGTERM after step 5" in out.output and "core resume" in out.output
    assert ck.latest_checkpoint(run).name == "ckpt-000005"
    assert signal.getsignal(signal.SIGTERM) is not None
    monkeypatch.undo()
    done = CliRunner().invoke(core, ["resume", str(run)])
    assert done.exit_code == 0, done.output
    assert final_bytes(run) == final_bytes(reference)


DRIVER = r"""
import sys, time
import kernels.train as t
real = t.train_step
def slow_step(*args):
    time.sleep(0.05)
    return real(*args)
t.train_step = slow_step
from kernels.cli import core
core.main(args=sys.argv[1:], prog_name="core")
"""


@pytest.mark.slow
def test_sigterm_to_a_core_train_process(tmp_path, reference):
    """The real process: SIGTERM mid-run, exit 75 within seconds, resume to the same bytes."""
    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(config().to_dict()))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", DRIVER, "train", "--out", str(run), "--config", str(cfg_file)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    metrics = run / t.METRICS_FILE
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 4:  # steps 0..3
            break
        time.sleep(0.005)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED, err.decode()[-2000:]
    assert time.monotonic() - t0 < 30
    latest = ck.latest_checkpoint(run)
    step = ck.load_checkpoint(latest, with_state=True).step
    assert 3 <= step < 10 and step == max(r["step"] for r in t.read_metrics(metrics))
    resumed = subprocess.run([sys.executable, "-m", "kernels.cli", "resume", str(run)],
                             cwd=ROOT, env=env, capture_output=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert final_bytes(run) == final_bytes(reference)
