"""Training: determinism, exact resume, accumulation, init, pre-flight, metrics, MLP path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kernels import checkpoint as ck
from kernels.serving import evaluate_checkpoint
from kernels.train import (
    PreflightError,
    TrainConfig,
    accumulate_gradients,
    read_metrics,
    train,
)
from tests.core.helpers import MICRO


def lm_config(**changes) -> TrainConfig:
    base = dict(
        family="gpt2", model=MICRO, seed=1, steps=6, batch_size=4, eval_every=2, ckpt_every=2,
        eval_windows=8, warmup=2, lr=3e-3, min_lr=3e-4,
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)


def weights(run) -> bytes:
    return (ck.latest_checkpoint(run) / ck.MODEL_FILE).read_bytes()


def test_same_inputs_give_byte_identical_weights(tmp_path):
    a = train(lm_config(), tmp_path / "a")
    b = train(lm_config(), tmp_path / "b")
    assert weights(tmp_path / "a") == weights(tmp_path / "b")
    assert a.weights_sha256 == b.weights_sha256
    c = train(lm_config(seed=2), tmp_path / "c")
    assert c.weights_sha256 != a.weights_sha256


def test_two_threads_train_data_parallel_deterministically_and_resume_exactly(tmp_path):
    """threads=2: two workers over single-threaded BLAS (kernels.parallel.engine_threads)."""
    cfg = lm_config(threads=2)
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert a.weights_sha256 == b.weights_sha256
    run = tmp_path / "cut"
    train(cfg, run)
    shutil.rmtree(run / "ckpt-000006")
    shutil.rmtree(run / "ckpt-000004")
    ck.write_latest(run, "ckpt-000002")
    assert train(cfg, run, resume=True).weights_sha256 == a.weights_sha256
    # the same run on one thread differs only in the order of the gradient sums
    one = train(lm_config(), tmp_path / "one")
    assert one.weights_sha256 != a.weights_sha256
    assert one.val_loss == pytest.approx(a.val_loss, rel=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_resume_from_an_earlier_checkpoint_is_exact(tmp_path, family):
    cfg = lm_config(family=family)
    train(cfg, tmp_path / "full")
    run = tmp_path / "cut"
    train(cfg, run)
    # Rewind as a kill after step 2's checkpoint would leave it (later files half-written).
    shutil.rmtree(run / "ckpt-000006")
    (run / "ckpt-000004" / ck.MODEL_FILE).write_bytes(b"partial")
    ck.write_latest(run, "ckpt-000002")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "loss": 1.0')  # a line cut short by the kill
    train(cfg, run, resume=True)
    assert weights(run) == weights(tmp_path / "full")
    strip = [
        {k: v for k, v in m.items() if k != "tokens_per_s"}
        for m in read_metrics(run / "metrics.jsonl")
    ]
    full = [{k: v for k, v in m.items() if k != "tokens_per_s"}
            for m in read_metrics(tmp_path / "full" / "metrics.jsonl")]  # fmt: skip
    assert strip == full


def test_resume_without_optimizer_state_is_refused(tmp_path):
    run = tmp_path / "r"
    train(lm_config(steps=2), run)
    latest = ck.latest_checkpoint(run)
    (latest / ck.OPTIMIZER_FILE).unlink()
    (latest / ck.DIGESTS_FILE).unlink()
    with pytest.raises(ck.CheckpointError, match="optimizer or trainer state missing"):
        train(lm_config(steps=2), run, resume=True)


def test_resume_with_a_different_config_is_refused(tmp_path):
    run = tmp_path / "r"
    train(lm_config(steps=2), run)
    with pytest.raises(Exception, match="different config"):
        train(lm_config(steps=2, lr=1e-2), run, resume=True)


def test_k_micro_batches_equal_one_batch_of_k_times_the_size(tmp_path):
    from tests.core.helpers import micro_model

    model = micro_model("gpt2", vocab_size=64)
    params = model.init_params(0)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 64, size=(8, MICRO["n_ctx"] + 1)).astype(np.int32)

    class Task:
        def loss_and_grads(self, p, b):
            return model.loss_and_grads(p, b)

    loss1, g1 = accumulate_gradients(Task(), params, [batch])
    loss4, g4 = accumulate_gradients(Task(), params, list(np.split(batch, 4)))
    assert loss4 == pytest.approx(loss1, rel=1e-6)
    for name in g1:
        np.testing.assert_allclose(g4[name], g1[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # ... and through the trainer: the same tokens per step, nearly the same weights
    a = train(lm_config(batch_size=8, grad_accum=1, steps=3, ckpt_every=3), tmp_path / "a")
    b = train(lm_config(batch_size=2, grad_accum=4, steps=3, ckpt_every=3), tmp_path / "b")
    pa = ck.load_checkpoint(a.checkpoint).params
    pb = ck.load_checkpoint(b.checkpoint).params
    for name in pa:
        np.testing.assert_allclose(pb[name], pa[name], rtol=1e-4, atol=2e-5, err_msg=name)
    assert a.val_loss == pytest.approx(b.val_loss, rel=1e-5)


def test_metrics_and_stamps(tmp_path):
    result = train(lm_config(), tmp_path / "m")
    records = read_metrics(tmp_path / "m" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(7))
    assert "val_loss" in records[0] and records[0]["purpose"] == "ablation"
    for r in records[1:]:
        assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(r)
    assert [r["step"] for r in records if "val_loss" in r] == [0, 2, 4, 6]
    loaded = ck.load_checkpoint(result.checkpoint)
    assert loaded.val_loss == records[-1]["val_loss"] == result.val_loss
    assert loaded.stamps["purpose"] == "ablation"
    assert loaded.stamps["purpose_label"].startswith("ablation")
    score, _ = ck.completeness(loaded.stamps)
    assert score >= 90  # code_version may be 'unknown' before the first commit
    assert json.loads(loaded.stamps["datasets"])[0]["name"] == "pystdlib"
    # every reported val loss equals its recomputation from the saved checkpoint
    for step in (2, 4, 6):
        ev = evaluate_checkpoint(tmp_path / "m" / f"ckpt-{step:06d}")
        assert ev["loss"] == records[step]["val_loss"] and ev["matches_stamp"]
    prov = json.loads((tmp_path / "m" / "provenance.json").read_text())
    assert prov["seed"] == 1 and prov["datasets"][0]["sha256"] and prov["dependencies"]["numba"]


def test_init_from_checkpoint_reproduces_its_val_loss(tmp_path):
    src = train(lm_config(), tmp_path / "src")
    train(lm_config(steps=2, seed=9), tmp_path / "ft", init=src.checkpoint)
    first = read_metrics(tmp_path / "ft" / "metrics.jsonl")[0]
    assert first["step"] == 0 and first["val_loss"] == src.val_loss


def test_init_refuses_contradicting_stamp_before_step_1(tmp_path):
    src = train(lm_config(steps=2), tmp_path / "src")
    ck.patch_stamps(src.checkpoint, {"architecture": "llama"})
    with pytest.raises(ck.CheckpointError, match="architecture='llama'.*'gpt2'"):
        train(lm_config(steps=2), tmp_path / "ft", init=src.checkpoint)
    assert not (tmp_path / "ft" / "latest").exists()
    with pytest.raises(ck.CheckpointError):  # the llama model cannot take gpt2 tensors either
        train(lm_config(steps=2, family="llama"), tmp_path / "ft2", init=src.checkpoint)


def test_init_refuses_tensors_not_covering_the_model(tmp_path):
    src = train(lm_config(steps=2), tmp_path / "src")
    bigger = {**MICRO, "d_model": 32}
    with pytest.raises(ck.CheckpointError, match="has shape"):
        train(lm_config(steps=2, model=bigger), tmp_path / "ft", init=src.checkpoint)


def test_ship_config_below_20_tokens_per_param_is_refused(tmp_path):
    with pytest.raises(PreflightError, match="'ship' run needs >= 20"):
        train(lm_config(purpose="ship"), tmp_path / "s")
    assert not (tmp_path / "s" / "latest").exists()


def test_mlp_classifier_on_digits(tmp_path):
    cfg = TrainConfig(family="mlp", steps=60, batch_size=32, lr=1e-2,
                      warmup=5, min_lr=1e-3, eval_every=30, ckpt_every=30)  # fmt: skip
    result = train(cfg, tmp_path / "mlp")
    records = read_metrics(tmp_path / "mlp" / "metrics.jsonl")
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[-1]["val_accuracy"] > 0.8
    loaded = ck.load_checkpoint(result.checkpoint)
    assert loaded.family == "mlp" and loaded.stamps["hf_architecture"] == "MLPClassifier"
    again = train(cfg, tmp_path / "mlp2")
    assert again.weights_sha256 == result.weights_sha256


def test_init_that_silently_fell_back_to_random_weights_is_caught(tmp_path, monkeypatch):
    import kernels.train as train_module

    src = train(lm_config(steps=2), tmp_path / "src")
    monkeypatch.setattr(
        train_module, "init_weights", lambda loaded, model, family: model.init_params(7)
    )
    with pytest.raises(ck.CheckpointError, match="did not load as trained"):
        train(lm_config(steps=2), tmp_path / "ft", init=src.checkpoint)


def test_classifier_checkpoint_evaluates_and_predicts(tmp_path):
    from kernels.data.digits import digits_splits
    from kernels.infer import predict
    from kernels.serving import model_from_checkpoint

    cfg = TrainConfig(family="mlp", steps=20, batch_size=32, lr=1e-2, eval_every=20, ckpt_every=20)
    result = train(cfg, tmp_path / "mlp")
    ev = evaluate_checkpoint(result.checkpoint)
    assert ev["matches_stamp"] and 0 <= ev["accuracy"] <= 1
    loaded = ck.load_checkpoint(result.checkpoint)
    model, _ = model_from_checkpoint(loaded)
    X, y = digits_splits()["val"]
    acc = float(np.mean(predict(model, loaded.params, X) == y))
    assert acc == pytest.approx(ev["accuracy"])
