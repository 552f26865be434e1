"""A longer real run: val loss falls across checkpoints, metrics recompute from checkpoints."""

from __future__ import annotations

import pytest

from kernels import checkpoint as ck
from kernels.serving import evaluate_checkpoint, generate_from_checkpoint
from kernels.train import TrainConfig, read_metrics, train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_val_loss_falls_across_checkpoints(tmp_path, family):
    cfg = TrainConfig(
        family=family, model={"n_layer": 1, "d_model": 64, "n_head": 2, "n_ctx": 32}, seed=0,
        steps=160, batch_size=8, lr=1e-2, warmup=10, min_lr=1e-3, eval_every=40,
        ckpt_every=40, eval_windows=32,
    )  # fmt: skip
    result = train(cfg, tmp_path / "run")
    vals = [r["val_loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
            if "val_loss" in r]  # fmt: skip
    assert len(vals) == 5 and all(b < a for a, b in zip(vals, vals[1:], strict=False))
    assert vals[-1] < vals[0] - 0.5
    for step in (40, 80, 120, 160):
        ckpt = tmp_path / "run" / f"ckpt-{step:06d}"
        assert evaluate_checkpoint(ckpt)["matches_stamp"]
    resources = read_metrics(tmp_path / "run" / "resources.jsonl")
    assert resources[0]["cpu_s"] > 0 and resources[0]["peak_rss_mb"] > 0
    assert ck.load_checkpoint(result.checkpoint).stamps["architecture"] == family


def test_a_ship_run_passes_the_gate_and_is_releasable(tmp_path):
    micro = {"n_layer": 1, "d_model": 16, "n_head": 2, "n_ctx": 16}
    cfg = TrainConfig(
        family="gpt2", model=micro, purpose="ship", steps=1300, batch_size=20, lr=1e-2,
        warmup=20, eval_every=650, ckpt_every=650, eval_windows=16,
    )  # fmt: skip
    result = train(cfg, tmp_path / "ship")
    assert result.tokens_per_param >= 20 and result.extra["label"] == "ship"
    report = ck.inspect_checkpoint(result.checkpoint)
    assert report["stamps"]["purpose"] == "ship" and report["completeness"] >= 90
    assert generate_from_checkpoint(result.checkpoint, "def ", 8).startswith("def ")
