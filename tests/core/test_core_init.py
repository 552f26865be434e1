"""--init never fails silently: a checkpoint whose tensors are not exactly the model's
(missing, renamed, extra, misshapen, wrong dtype) is refused before step 1 by one line
naming the tensor, with or without the checkpoint's config and eval stamps."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import checkpoint as ck
from kernels.train import TrainConfig, train
from tests.core.helpers import MICRO, micro_model

CONFIG_EVAL_STAMPS = ("config", "eval_spec", "val_loss", "train_config")


def test_a_tensor_of_the_wrong_dtype_is_refused_naming_it():
    model = micro_model("gpt2")
    params = model.init_params(0)
    params["transformer.wpe.weight"] = params["transformer.wpe.weight"].astype(np.float16)
    ck.check_coverage(params, model.param_shapes(), "m.safetensors")  # dtype not asked
    with pytest.raises(ck.CheckpointError) as err:
        ck.check_coverage(params, model.param_shapes(), "m.safetensors", np.float32)
    message = str(err.value)
    assert "m.safetensors: tensor transformer.wpe.weight has dtype float16" in message
    assert "convert the checkpoint to float32" in message and "\n" not in message


def test_a_renamed_tensor_is_named_under_both_names():
    model = micro_model("llama")
    params = model.init_params(0)
    params["model.norm.kernel"] = params.pop("model.norm.weight")
    with pytest.raises(ck.CheckpointError) as err:
        ck.check_coverage(params, model.param_shapes(), "m.safetensors")
    message = str(err.value)
    assert "tensor model.norm.weight is missing and model.norm.kernel is not in the model" in (
        message
    )
    assert "rename model.norm.kernel to model.norm.weight" in message


def lm_config(**changes) -> TrainConfig:
    base = dict(
        family="gpt2", model=MICRO, seed=1, steps=2, batch_size=4, eval_every=2, ckpt_every=2,
        eval_windows=8, warmup=1,
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)


def unstamped_copy(src, dest, change=None):
    """The source's weights without config and eval stamps (another tool's export)."""
    tensors, stamps = ck.read_safetensors(ck.resolve_model_file(src))
    for key in CONFIG_EVAL_STAMPS:
        stamps.pop(key)
    if change is not None:
        change(tensors)
    dest.mkdir()
    (dest / ck.MODEL_FILE).write_bytes(ck.encode_safetensors(tensors, stamps))
    return dest


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_init_from_a_checkpoint_without_config_stamp_uses_the_run_config(tmp_path, family):
    """It used to fail on the missing vocab size, for a sound checkpoint too."""
    src = train(lm_config(family=family), tmp_path / "src")
    plain = unstamped_copy(src.checkpoint, tmp_path / "plain")
    train(lm_config(family=family, seed=2), tmp_path / "ft", init=plain)
    assert ck.latest_checkpoint(tmp_path / "ft") is not None


def half(tensors):
    tensors["transformer.h.0.attn.c_attn.weight"] = tensors[
        "transformer.h.0.attn.c_attn.weight"
    ].astype(np.float16)


def extra(tensors):
    tensors["transformer.h.0.attn.bias"] = np.ones(4, dtype=np.float32)


@pytest.mark.parametrize(
    ("change", "tensor"),
    [(half, "transformer.h.0.attn.c_attn.weight"), (extra, "transformer.h.0.attn.bias")],
)
@pytest.mark.parametrize("stamped", [True, False])
def test_init_refuses_bad_tensors_before_step_1_naming_them(tmp_path, change, tensor, stamped):
    src = train(lm_config(), tmp_path / "src")
    if stamped:
        init = ck.patch_stamps(src.checkpoint, {}, out=tmp_path / "bad" / ck.MODEL_FILE)[0]
        tensors, stamps = ck.read_safetensors(init)
        change(tensors)
        init.write_bytes(ck.encode_safetensors(tensors, stamps))
    else:
        init = unstamped_copy(src.checkpoint, tmp_path / "bad", change)
    with pytest.raises(ck.CheckpointError, match=f"tensor.* {tensor}[ ;,]"):
        train(lm_config(seed=2), tmp_path / "ft", init=init)
    assert not (tmp_path / "ft" / "metrics.jsonl").exists()
    assert ck.latest_checkpoint(tmp_path / "ft") is None
