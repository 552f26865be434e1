"""Helpers of the training checks (acceptance/training.py, acceptance/training_reruns.py),
their child process (acceptance/training_child.py) and their mutants."""

from __future__ import annotations

import json
import math
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from acceptance import training as tr
from acceptance import training_child as tchild
from acceptance import training_reruns as reruns
from falsifiers.mutants import training as mutants
from harness.falsify.faults import Sigkill


def test_the_child_is_handed_every_patch_the_engine_applied(monkeypatch):
    """The worker's mutants reach the training child: the child's patch list is what
    the engine reports active, and applying it in the child patches the same names."""
    import kernels.checkpoint
    import kernels.train
    from harness.falsify import patching

    monkeypatch.setattr(patching, "_ACTIVE", {})
    for mod, name in ((kernels.train, "shuffle_order"), (kernels.checkpoint, "save_checkpoint")):
        monkeypatch.setattr(mod, name, getattr(mod, name))  # restored after the test
    assert patching.active_patches() == {}
    patching.apply_patch(
        "kernels.train:shuffle_order", "falsifiers.mutants.training:unseeded_shuffle_order"
    )
    patching.apply_patch(
        "kernels.checkpoint:save_checkpoint",
        "falsifiers.mutants.training:save_checkpoint_latest_first",
    )
    assert kernels.train.shuffle_order is mutants.unseeded_shuffle_order
    handed = patching.active_patches()
    assert handed == {
        "kernels.train:shuffle_order": "falsifiers.mutants.training:unseeded_shuffle_order",
        "kernels.checkpoint:save_checkpoint": (
            "falsifiers.mutants.training:save_checkpoint_latest_first"
        ),
    }
    # the child side: a fresh record, the same patches applied from the handed list
    monkeypatch.setattr(patching, "_ACTIVE", {})
    monkeypatch.setattr(kernels.train, "shuffle_order", kernels.train.data.shuffle_order)
    tchild.apply_patches(handed)
    assert kernels.train.shuffle_order is mutants.unseeded_shuffle_order
    assert patching.active_patches() == handed


def _ctx(seed: int, fault=None, **params):
    return SimpleNamespace(params=params, rng=random.Random(seed), fault=fault, seed=seed)


CFG = SimpleNamespace(steps=12, ckpt_every=3)


@pytest.mark.parametrize("seed", range(40))
def test_kill_plan_without_fault_resumes_from_a_real_checkpoint(seed):
    kills = reruns.kill_plan(_ctx(seed, kill_between=[3, 11], write_kill_between=[6, 12]), CFG)
    step = next(k for k in kills if k["at"] == "step")
    write = next(k for k in kills if k["at"] == "checkpoint_write")
    assert 3 <= step["step"] <= 11 and write["step"] in (6, 9, 12)
    assert {k["by"] for k in kills} == {"check"}
    order = [(k["step"], k["at"] == "step") for k in kills]
    assert order == sorted(order)


@pytest.mark.parametrize("seed", range(20))
def test_kill_plan_hands_one_kill_to_the_fault(seed):
    by_step = Sigkill({"between": [1, 11]}, seed)
    kills = reruns.kill_plan(_ctx(seed, fault=by_step), CFG)
    faulted = [k for k in kills if k["by"] == "fault"]
    assert len(faulted) == 1 and faulted[0] == {"at": "step", "step": by_step.step, "by": "fault"}
    in_write = Sigkill({"between": [1, 12], "during": "checkpoint_write"}, seed)
    kills = reruns.kill_plan(_ctx(seed, fault=in_write), CFG)
    (faulted,) = [k for k in kills if k["by"] == "fault"]
    assert faulted["at"] == "checkpoint_write" and faulted["file"] in reruns.WRITE_FILES
    assert faulted["step"] == max(3, math.ceil(in_write.step / 3) * 3)


def test_claimed_family_and_naming():
    assert tr.claimed_family("llama") == "llama"
    assert tr.claimed_family("LlamaForCausalLM") == "llama"
    assert tr.claimed_family("GPT2LMHeadModel") == "gpt2"
    assert tr.claimed_family("qwen2") is None
    message = "x: stamped architecture='LlamaForCausalLM' contradicts ... architecture 'gpt2'"
    assert tr.names_family(message, "llama") and tr.names_family(message, "gpt2")
    assert not tr.names_family("/runs/gpt2-llama/init.safetensors: missing tensors", "gpt2")


def test_lr_schedule_matches_the_optimizer_schedule():
    from kernels.optim import lr_at

    cfg = SimpleNamespace(lr=3e-3, warmup=4, steps=24, min_lr=3e-4)
    for step in range(30):
        assert tr.lr_schedule(cfg, step) == lr_at(step, 3e-3, 4, 24, 3e-4)


def test_val_windows_are_the_trainers_eval_windows():
    from kernels.train import gather_windows

    tokens = np.arange(200, dtype=np.int32)
    want = gather_windows(tokens, np.arange(8), 0, 16)
    assert np.array_equal(tr.val_windows(tokens, 16, 8), want)
    assert tr.val_windows(tokens, 16, 100).shape == (12, 17)  # capped by the split


def test_grad_rel_err():
    g = {"a": np.ones((2, 2), np.float32), "b": np.arange(3, dtype=np.float32)}
    assert tr.grad_rel_err(g, g) == 0.0
    assert tr.grad_rel_err({k: 2 * v for k, v in g.items()}, g) == pytest.approx(1.0)
    assert tr.grad_rel_err({"a": g["a"]}, g) == math.inf


def test_required_provenance_names_what_is_missing():
    full = {
        "code_version": "abc", "source_sha256": "d", "dependencies": {"numpy": "2"},
        "dependency_sha256": "e", "datasets": [{"name": "x"}], "train_config": {"seed": 0},
        "seed": 0, "environment": {"python": "3.11", "platform": "linux", "threads": 1},
    }  # fmt: skip
    assert reruns.required_provenance(full) == []
    partial = {**full, "datasets": [], "code_version": "unknown", "environment": {"threads": 1}}
    assert reruns.required_provenance(partial) == [
        "code_version", "datasets", "environment.python", "environment.platform",
    ]  # fmt: skip
    assert "seed" not in reruns.required_provenance({**full, "seed": 0})  # seed 0 is a seed


def test_stable_metrics_drop_wall_clock_fields(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 2.0, "tokens_per_s": 123.0}) + "\n")
    assert reruns.stable_metrics(path) == [{"step": 1, "loss": 2.0}]
    assert reruns.stable_metrics(tmp_path / "absent.jsonl") == []


def test_step_loss_and_norm_equal_the_trainers_accumulation():
    from kernels.config import ModelConfig
    from kernels.models.registry import build_model
    from kernels.optim import global_grad_norm
    from kernels.train import accumulate_gradients

    model = build_model(
        ModelConfig(family="gpt2", n_layer=1, d_model=16, n_head=2, n_ctx=8, vocab_size=32)
    )
    params = model.init_params(0)
    batch = np.random.default_rng(0).integers(0, 32, size=(4, 9)).astype(np.int32)
    task = SimpleNamespace(loss_and_grads=model.loss_and_grads)
    loss, grads = accumulate_gradients(
        task, params, [np.ascontiguousarray(b) for b in np.split(batch, 2)]
    )
    got_loss, got_norm = tr.step_loss_and_norm(model, params, batch, 2)
    assert got_loss == pytest.approx(loss, rel=1e-12)
    assert got_norm == pytest.approx(global_grad_norm(grads), rel=1e-5)


def test_mutant_accumulations_are_wrong_and_the_real_one_is_not():
    grads = [{"w": np.full(3, float(i + 1), np.float32)} for i in range(4)]
    task = SimpleNamespace(loss_and_grads=lambda params, batch: (float(batch), grads[batch]))
    _, summed = mutants.summing_accumulation(task, {}, [0, 1, 2, 3])
    _, dropped = mutants.dropping_accumulation(task, {}, [0, 1, 2, 3])
    assert summed["w"][0] == 10.0 and dropped["w"][0] == 2.0  # the mean is 2.5


@pytest.mark.slow
def test_child_pauses_inside_a_checkpoint_write_and_leaves_latest_usable(tmp_path):
    """End to end: a real child pauses half-way through a checkpoint file, is SIGKILLed,
    and the run's latest checkpoint is still the previous complete one."""
    cfg = tr.config_from(
        {"family": "gpt2", "model": {"n_layer": 1, "d_model": 16, "n_head": 2, "n_ctx": 16},
         "steps": 6, "batch_size": 2, "eval_every": 3, "ckpt_every": 3, "eval_windows": 4},
        seed=1,
    )  # fmt: skip
    ctx = SimpleNamespace(scratch=tmp_path, root=Path(__file__).resolve().parents[2])
    run = tmp_path / "run"
    child = tchild.Child(ctx, run, cfg, "c", pause={"at": "checkpoint_write", "step": 6,
                                                 "file": "trainer.json"})  # fmt: skip
    assert child.wait_paused(120), child.tail()
    child.proc.send_signal(signal.SIGKILL)
    assert child.finish(60) == -signal.SIGKILL
    assert json.loads(child.marker.read_text())["file"] == "trainer.json"
    assert list(run.glob(".ckpt-000006.partial/.trainer.json.*.tmp"))  # the torn temp file
    assert reruns.latest_loadable(run) == (True, 3)
