"""Checkpoint format: layout, atomic writes, refusals, completeness, stamping."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kernels import checkpoint as ck
from tests.core.helpers import full_stamps, micro_model


def test_layout_round_trip_and_latest_pointer(saved_gpt2):
    path, model, params = saved_gpt2
    run = path.parent
    assert path.name == "ckpt-000005"
    assert sorted(os.listdir(path)) == [
        "digests.json", "model.safetensors", "optimizer.safetensors", "trainer.json",
    ]  # fmt: skip
    assert (run / "latest").read_text().strip() == "ckpt-000005"
    assert [p for p in os.listdir(run) if p.startswith(".")] == []  # no temp leftovers
    loaded = ck.load_checkpoint(run, with_state=True)
    assert loaded.family == "gpt2" and loaded.step == 5 and loaded.val_loss == 3.25
    for name, value in params.items():
        assert loaded.params[name].tobytes() == value.tobytes()
    assert loaded.trainer["cursor"] == {"epoch": 0, "pos": 3}
    assert set(loaded.optimizer) == {f"m.{k}" for k in params}


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    ck.atomic_write_bytes(target, b"one")
    ck.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_stamp_contradicting_tensor_names_is_refused_naming_both(tmp_path):
    model = micro_model("gpt2")
    stamps = {**full_stamps("gpt2", model), **ck.identity_stamps("llama")}
    ck.save_weights(tmp_path / "m.safetensors", model.init_params(0), stamps)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_checkpoint(tmp_path / "m.safetensors")
    msg = str(err.value)
    assert "\n" not in msg and "llama" in msg and "gpt2" in msg and "m.safetensors" in msg


def test_llama_tensors_stamped_gpt2_are_refused(tmp_path):
    model = micro_model("llama")
    stamps = {**full_stamps("llama", model), "architecture": "gpt2"}
    ck.save_weights(tmp_path / "m.safetensors", model.init_params(0), stamps)
    with pytest.raises(ck.CheckpointError, match="architecture='gpt2'.*'llama'"):
        ck.load_checkpoint(tmp_path / "m.safetensors")


def test_tensors_must_cover_the_model(tmp_path):
    model = micro_model("gpt2")
    params = model.init_params(0)
    dropped = dict(params)
    name = sorted(dropped)[0]
    del dropped[name]
    ck.save_weights(tmp_path / "a.safetensors", dropped, full_stamps("gpt2", model))
    with pytest.raises(ck.CheckpointError, match=f"missing {name}"):
        ck.load_checkpoint(tmp_path / "a.safetensors")
    bigger = micro_model("gpt2", vocab_size=40)
    with pytest.raises(ck.CheckpointError, match="has shape"):
        ck.save_weights(tmp_path / "b.safetensors", params, full_stamps("gpt2", model))
        ck.load_checkpoint(tmp_path / "b.safetensors", expected_shapes=bigger.param_shapes())


@pytest.mark.parametrize("cut", [3, 100, -10])
def test_truncated_weights_give_checkpoint_error_naming_file(saved_gpt2, cut):
    path, _, _ = saved_gpt2
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:cut])
    with pytest.raises(ck.CheckpointError, match="model.safetensors"):
        ck.load_checkpoint(path)
    (path / "digests.json").unlink()  # without the digest record the parser still refuses
    with pytest.raises(ck.CheckpointError, match="model.safetensors.*(truncated|corrupted)"):
        ck.load_checkpoint(path)


def test_flipped_byte_is_caught_by_the_digest(saved_gpt2):
    path, _, _ = saved_gpt2
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match="model.safetensors: sha256 .* does not match"):
        ck.load_checkpoint(path)


def test_garbage_header_and_bad_trainer_json(tmp_path, saved_gpt2):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ck.CheckpointError, match="bad.safetensors: corrupted safetensors header"):
        ck.load_checkpoint(bad)
    path, _, _ = saved_gpt2
    (path / "trainer.json").write_text("{cut sho")
    (path / "digests.json").unlink()
    with pytest.raises(ck.CheckpointError, match="trainer.json: corrupted"):
        ck.load_checkpoint(path, with_state=True)


def test_completeness_score_and_breakdown():
    model = micro_model("gpt2")
    stamps = full_stamps("gpt2", model)
    score, breakdown = ck.completeness(stamps)
    assert score == 100 and all(item["present"] for item in breakdown.values())
    del stamps["tokenizer"]
    stamps["code_version"] = "unknown"
    score, breakdown = ck.completeness(stamps)
    assert score == 100 - 15 - 10  # no embedded tokenizer (<90: not releasable), no code version
    score, breakdown = ck.completeness({**stamps, "source_sha256": "ab" * 32})
    assert score == 100 - 15 and breakdown["code_version"]["from"] == "source_sha256"
    mlp = {**stamps, **ck.identity_stamps("mlp")}
    del mlp["tokenizer_sha256"]
    score, breakdown = ck.completeness(mlp)
    assert breakdown["tokenizer"]["not_applicable"] and score == 100 - 10
    assert not breakdown["tokenizer"]["present"] and breakdown["tokenizer"]["max"] == 15
    assert ck.completeness({})[0] == 0


def test_patch_stamps_records_new_digest_and_repairs_identity(saved_gpt2):
    path, _, _ = saved_gpt2
    ck.patch_stamps(path, {"architecture": "llama", "hf_model_type": "llama"})
    with pytest.raises(ck.CheckpointError, match="architecture='llama'"):
        ck.load_checkpoint(path)
    weights, digest = ck.patch_stamps(path, {"architecture": "gpt2", "hf_model_type": "gpt2"})
    assert digest == ck.sha256_file(weights)
    assert json.loads((path / "digests.json").read_text())["model.safetensors"] == digest
    loaded = ck.load_checkpoint(path)  # digests verify, identity consistent again
    history = json.loads(loaded.stamps["stamp_history"])
    assert len(history) == 2 and history[1]["changed"] == ["architecture", "hf_model_type"]


def test_interrupted_checkpoint_write_keeps_previous_latest(saved_gpt2, monkeypatch):
    path, model, params = saved_gpt2
    run = path.parent

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ck, "save_trainer_state", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(run, 10, params, full_stamps("gpt2", model), optimizer={},
                           trainer={"step": 10})  # fmt: skip
    assert ck.latest_checkpoint(run).name == "ckpt-000005"
    assert not (run / "ckpt-000010").exists()
    assert ck.load_checkpoint(run).step == 5
    np.testing.assert_array_equal(ck.load_checkpoint(run).params["transformer.wte.weight"],
                                  params["transformer.wte.weight"])  # fmt: skip


def test_identity_stamps_contradicting_tensors_score_nothing(saved_gpt2):
    path, _, _ = saved_gpt2
    ck.patch_stamps(path, {"hf_architecture": "LlamaForCausalLM"})
    report = ck.inspect_checkpoint(path)
    assert report["completeness"] == 75  # the whole identity (25 points) is void
    assert report["breakdown"]["hf_architecture"]["contradicts_tensors"] == "GPT2LMHeadModel"
    assert "hf_architecture='LlamaForCausalLM'" in report["identity"]
