"""Sharded checkpoints (the Hugging Face layout): planning, round trip and refusals."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kernels import checkpoint as ck
from tests.core.helpers import full_stamps, micro_model


@pytest.fixture
def model_params():
    model = micro_model("gpt2")
    return model, model.init_params(0)


def _total(params) -> int:
    return sum(v.nbytes for v in params.values())


@pytest.fixture
def sharded(tmp_path, model_params):
    """A run dir whose one checkpoint has its weights in >= 3 shards."""
    model, params = model_params
    path = ck.save_checkpoint(
        tmp_path / "run", 5, params, full_stamps("gpt2", model),
        max_shard_bytes=_total(params) // 4,
    )  # fmt: skip
    return path, model, params


def _index(path):
    return json.loads((path / ck.INDEX_FILE).read_text())


def _redigest(path, *files):
    digests = json.loads((path / ck.DIGESTS_FILE).read_text())
    for f in files:
        if (path / f).is_file():
            digests[f] = ck.sha256_file(path / f)
        else:
            digests.pop(f, None)
    (path / ck.DIGESTS_FILE).write_text(json.dumps(digests))


def test_plan_shards_packs_greedily_in_name_order():
    sizes = {"a": 4, "b": 4, "c": 8, "d": 2, "e": 20}
    assert ck.plan_shards(sizes, 8) == [["a", "b"], ["c"], ["d"], ["e"]]  # e alone: > max
    assert ck.plan_shards(sizes, 10) == [["a", "b"], ["c", "d"], ["e"]]
    assert ck.plan_shards(sizes, 1000) == [["a", "b", "c", "d", "e"]]


def test_plan_shards_keeps_the_last_tensor_when_a_shard_ends_exactly_at_the_limit():
    sizes = {"a": 3, "b": 5, "c": 8}
    shards = ck.plan_shards(sizes, 8)
    assert shards == [["a", "b"], ["c"]]
    assert sorted(n for s in shards for n in s) == sorted(sizes)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_plan_shards_refuses_a_bad_limit(bad):
    with pytest.raises(ValueError, match="max_shard_bytes"):
        ck.plan_shards({"a": 1}, bad)


def test_shard_file_names_follow_hugging_face():
    assert ck.shard_file_name(1, 3) == "model-00001-of-00003.safetensors"
    assert ck.SHARD_NAME.fullmatch(ck.shard_file_name(12, 40))


def test_sharded_round_trip_layout_and_index(sharded):
    path, _, params = sharded
    index = _index(path)
    files = sorted(set(index["weight_map"].values()))
    n = len(files)
    assert n >= 3
    assert files == [ck.shard_file_name(i, n) for i in range(1, n + 1)]
    assert sorted(os.listdir(path)) == sorted([*files, ck.INDEX_FILE, ck.DIGESTS_FILE])
    assert index["metadata"]["total_size"] == _total(params)
    assert set(index["weight_map"]) == set(params)
    assert set(json.loads((path / ck.DIGESTS_FILE).read_text())) == {*files, ck.INDEX_FILE}
    loaded = ck.load_checkpoint(path.parent)  # through `latest`
    assert loaded.family == "gpt2" and loaded.step == 5 and loaded.val_loss == 3.25
    assert set(loaded.params) == set(params)
    for name, value in params.items():
        assert loaded.params[name].dtype == value.dtype
        assert loaded.params[name].tobytes() == value.tobytes()


def test_sharded_and_single_file_give_the_same_checkpoint(tmp_path, sharded):
    path, model, params = sharded
    single = ck.save_checkpoint(tmp_path / "single", 5, params, full_stamps("gpt2", model))
    a, b = ck.load_checkpoint(single), ck.load_checkpoint(path)
    assert a.stamps == b.stamps
    assert ck.read_stamps(path) == ck.read_stamps(single)
    report = ck.inspect_checkpoint(path)
    assert report["completeness"] == ck.inspect_checkpoint(single)["completeness"]
    assert report["file"].endswith(ck.INDEX_FILE) and report["n_tensors"] == len(params)


def test_resaving_a_step_with_fewer_shards_leaves_no_stale_shard(tmp_path, model_params):
    model, params = model_params
    run = tmp_path / "run"
    out = ck.save_checkpoint(run, 5, params, full_stamps("gpt2", model),
                             max_shard_bytes=_total(params) // 6)  # fmt: skip
    many = len(list(out.glob("model-*.safetensors")))
    out = ck.save_checkpoint(run, 5, params, full_stamps("gpt2", model),
                             max_shard_bytes=_total(params) // 2)  # fmt: skip
    left = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(left) < many and left == sorted(set(_index(out)["weight_map"].values()))
    assert ck.load_checkpoint(run).params.keys() == params.keys()


def test_a_crash_while_resharding_leaves_the_previous_checkpoint_whole(
    tmp_path, model_params, monkeypatch
):
    """Shards are written only into save_checkpoint's staging directory: a crash after
    some new shards were written, before the new index, leaves the old checkpoint (its
    index, its shards, latest) untouched and loadable."""
    model, params = model_params
    run = tmp_path / "run"
    out = ck.save_checkpoint(run, 5, params, full_stamps("gpt2", model),
                             max_shard_bytes=_total(params) // 6)  # fmt: skip
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = ck.atomic_write_bytes

    def crash_at_the_index(path, data):
        if Path(path).name == ck.INDEX_FILE:
            raise KeyboardInterrupt("killed before the index")
        real(path, data)

    monkeypatch.setattr(ck, "atomic_write_bytes", crash_at_the_index)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(run, 5, params, {**full_stamps("gpt2", model), "step": "6"},
                           max_shard_bytes=_total(params) // 2)  # fmt: skip
    monkeypatch.setattr(ck, "atomic_write_bytes", real)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert ck.load_checkpoint(run).stamps["step"] == "5"


def test_shards_are_written_only_by_save_checkpoint(tmp_path, model_params):
    """No public writer of shards into an existing directory (not crash-safe in place);
    the private one refuses any directory but a fresh, empty one."""
    model, params = model_params
    assert not hasattr(ck, "save_sharded_weights")
    assert "save_sharded_weights" not in ck.__all__
    ck.save_weights(tmp_path / ck.MODEL_FILE, params, full_stamps("gpt2", model))
    with pytest.raises(ck.CheckpointError, match="not an empty directory.*save_checkpoint"):
        ck._save_sharded_weights(tmp_path, params, full_stamps("gpt2", model), 1024)


def test_both_layouts_in_one_directory_are_ambiguous(sharded, model_params):
    path, model, params = sharded
    ck.save_weights(path / ck.MODEL_FILE, params, full_stamps("gpt2", model))
    with pytest.raises(ck.CheckpointError, match="ambiguous"):
        ck.load_checkpoint(path)


def test_a_missing_shard_is_refused_naming_it(sharded):
    path, _, _ = sharded
    victim = sorted(set(_index(path)["weight_map"].values()))[1]
    (path / victim).unlink()
    _redigest(path, victim)
    with pytest.raises(ck.CheckpointError, match=f"{victim}: missing shard") as err:
        ck.load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_a_missing_shard_still_listed_in_digests_is_refused_naming_it(sharded):
    path, _, _ = sharded
    victim = sorted(set(_index(path)["weight_map"].values()))[-1]
    (path / victim).unlink()
    with pytest.raises(ck.CheckpointError, match=victim):
        ck.load_checkpoint(path)


def test_a_stale_extra_tensor_in_a_shard_is_refused_naming_file_and_tensor(sharded):
    path, _, _ = sharded
    weight_map = _index(path)["weight_map"]
    first, last = sorted(set(weight_map.values()))[0], sorted(set(weight_map.values()))[-1]
    moved = min(t for t, f in weight_map.items() if f == last)
    tensors, meta = ck.read_safetensors(path / first)
    later, _ = ck.read_safetensors(path / last)
    tensors[moved] = later[moved] * 0.5
    (path / first).write_bytes(ck.encode_safetensors(tensors, meta))
    _redigest(path, first)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_checkpoint(path)
    msg = str(err.value)
    assert first in msg and moved in msg and "does not map" in msg


def test_a_tensor_absent_from_its_shard_is_refused_naming_file_and_tensor(sharded):
    path, _, _ = sharded
    shard = sorted(set(_index(path)["weight_map"].values()))[0]
    tensors, meta = ck.read_safetensors(path / shard)
    dropped = max(tensors)
    del tensors[dropped]
    (path / shard).write_bytes(ck.encode_safetensors(tensors, meta))
    _redigest(path, shard)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_checkpoint(path)
    msg = str(err.value)
    assert shard in msg and dropped in msg and "lacks" in msg


def test_a_changed_shard_is_refused_by_its_digest(sharded):
    path, _, _ = sharded
    shard = sorted(set(_index(path)["weight_map"].values()))[1]
    data = bytearray((path / shard).read_bytes())
    data[-1] ^= 0xFF
    (path / shard).write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match=f"{shard}: sha256"):
        ck.load_checkpoint(path)


@pytest.mark.parametrize("which", [0, ck.INDEX_FILE])
def test_a_shard_or_index_not_listed_in_digests_is_refused_saying_what_to_do(sharded, which):
    path, _, _ = sharded
    shards = sorted(set(_index(path)["weight_map"].values()))
    name = shards[which] if isinstance(which, int) else which
    digests = json.loads((path / ck.DIGESTS_FILE).read_text())
    del digests[name]
    (path / ck.DIGESTS_FILE).write_text(json.dumps(digests))
    with pytest.raises(ck.CheckpointError, match=f"{name}: not listed in digests.json") as err:
        ck.load_checkpoint(path)
    assert "re-save the checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_total_size_is_refused(sharded):
    path, _, params = sharded
    index = _index(path)
    index["metadata"]["total_size"] = _total(params) - 4
    (path / ck.INDEX_FILE).write_text(json.dumps(index))
    _redigest(path, ck.INDEX_FILE)
    with pytest.raises(ck.CheckpointError, match="total_size") as err:
        ck.load_checkpoint(path)
    assert "re-save the checkpoint" in str(err.value)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda ix: ix.update(weight_map={}), "non-empty 'weight_map'"),
        (lambda ix: ix.pop("metadata"), "'metadata' object"),
        (lambda ix: ix["metadata"].update(total_size="12"), "total_size"),
        (lambda ix: ix["weight_map"].update({"lm": "../x.safetensors"}), "not a shard file"),
        (lambda ix: ix["weight_map"].update({"lm": "model.bin"}), "not a shard file"),
    ],
)
def test_a_malformed_index_is_refused_naming_it(sharded, change, message):
    path, _, _ = sharded
    index = _index(path)
    change(index)
    (path / ck.INDEX_FILE).write_text(json.dumps(index))
    _redigest(path, ck.INDEX_FILE)
    with pytest.raises(ck.CheckpointError, match=message) as err:
        ck.load_checkpoint(path)
    assert ck.INDEX_FILE in str(err.value)


def test_an_unreadable_index_is_refused(sharded):
    path, _, _ = sharded
    (path / ck.INDEX_FILE).write_text("{not json")
    (path / ck.DIGESTS_FILE).unlink()
    with pytest.raises(ck.CheckpointError, match="corrupted shard index"):
        ck.load_checkpoint(path)


def test_sharded_state_loads_with_optimizer_and_trainer(tmp_path, model_params):
    model, params = model_params
    opt = {f"m.{k}": np.zeros_like(v) for k, v in params.items()}
    path = ck.save_checkpoint(
        tmp_path / "run", 3, params, full_stamps("gpt2", model), optimizer=opt,
        trainer={"step": 3}, max_shard_bytes=2048,
    )  # fmt: skip
    loaded = ck.load_checkpoint(path, with_state=True)
    assert set(loaded.optimizer) == set(opt) and loaded.trainer == {"step": 3}


def test_patching_stamps_of_a_sharded_checkpoint_is_refused(sharded):
    path, _, _ = sharded
    with pytest.raises(ck.CheckpointError, match="sharded"):
        ck.patch_stamps(path, {"purpose": "x"})


# ---------------------------------------------------------------- shard names


ARABIC_1 = "\u0661" * 5  # Arabic-Indic digits: a \d without re.ASCII matched them


@pytest.mark.parametrize(
    "weight_map,message",
    [
        ({"a": "optimizer.safetensors"}, "'optimizer.safetensors', not a shard file"),
        ({"a": "extra.safetensors"}, "'extra.safetensors', not a shard file"),
        ({"a": "sub/model-00001-of-00001.safetensors"}, "not a shard file"),
        ({"a": f"model-{ARABIC_1}-of-{ARABIC_1}.safetensors"}, "not a shard file"),
        ({"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00003.safetensors"},
         "says there are 2 shards"),
        ({"a": "model-00001-of-00003.safetensors", "b": "model-00003-of-00003.safetensors"},
         "maps no tensor to model-00002-of-00003.safetensors"),
        ({"a": "model-00000-of-00001.safetensors"}, "not in 1..1"),
        ({"a": "model-00001-of-00001.safetensors", "b": "model-00002-of-00001.safetensors"},
         "not in 1..1"),
    ],
)  # fmt: skip
def test_an_index_naming_anything_but_one_complete_shard_set_is_refused(
    tmp_path, weight_map, message
):
    index = tmp_path / ck.INDEX_FILE
    index.write_text(json.dumps({"metadata": {"total_size": 8}, "weight_map": weight_map}))
    with pytest.raises(ck.CheckpointError, match=message) as err:
        ck.read_shard_index(index)
    assert str(err.value).startswith(f"{index}: ") and "\n" not in str(err.value)


def test_a_tensor_moved_into_optimizer_safetensors_is_refused(sharded):
    """The loader used to take any *.safetensors the index named: a tensor remapped to
    optimizer.safetensors (which holds it, all digests re-recorded) loaded."""
    path, _, params = sharded
    index = _index(path)
    shard = sorted(set(index["weight_map"].values()))[0]
    tensors, meta = ck.read_safetensors(path / shard)
    moved = min(tensors)
    (path / ck.OPTIMIZER_FILE).write_bytes(ck.encode_safetensors({moved: tensors.pop(moved)}, meta))
    (path / shard).write_bytes(ck.encode_safetensors(tensors, meta))
    index["weight_map"][moved] = ck.OPTIMIZER_FILE
    (path / ck.INDEX_FILE).write_text(json.dumps(index))
    _redigest(path, shard, ck.OPTIMIZER_FILE, ck.INDEX_FILE)
    with pytest.raises(ck.CheckpointError, match=f"tensor {moved} maps to 'optimizer.safetensors'"):
        ck.load_checkpoint(path)


# ---------------------------------------------------------------- read once, digests


def _count_opens(monkeypatch) -> dict[str, int]:
    """{file name: times opened} from now on (pathlib reads go through io.open)."""
    opened: dict[str, int] = {}

    def counting(real):
        def open_(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)):
                name = Path(file).name
                opened[name] = opened.get(name, 0) + 1
            return real(file, *args, **kwargs)

        return open_

    monkeypatch.setattr(io, "open", counting(io.open))
    monkeypatch.setattr(builtins, "open", counting(builtins.open))
    return opened


def test_each_weights_file_is_read_once_hashed_and_parsed_from_those_bytes(
    tmp_path, sharded, monkeypatch
):
    path, model, params = sharded
    single = ck.save_checkpoint(tmp_path / "single", 5, params, full_stamps("gpt2", model))
    files = [ck.INDEX_FILE, *set(_index(path)["weight_map"].values()), ck.MODEL_FILE]
    opened = _count_opens(monkeypatch)
    ck.load_checkpoint(path)
    ck.load_checkpoint(single)
    assert {f: opened.get(f) for f in files} == dict.fromkeys(files, 1)


def test_a_shard_replaced_after_its_first_open_is_parsed_as_hashed(sharded, monkeypatch):
    """The shard is replaced on disk (a new file renamed over it) right after the loader
    first opens it: a loader that hashed one read and parsed another would load the new
    bytes; this one parses the bytes whose digest matched."""
    path, _, params = sharded
    shard = sorted(set(_index(path)["weight_map"].values()))[0]
    tampered = bytearray((path / shard).read_bytes())
    tampered[-1] ^= 0xFF  # a weight changes, the header stays valid
    real_io_open, real_open = io.open, builtins.open
    opens: list[str] = []

    def swapping(real):
        def open_(file, *args, **kwargs):
            handle = real(file, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and Path(file).name == shard:
                if not opens:  # the handle just opened keeps reading the original
                    with real_open(path / "swap.tmp", "wb") as fh:
                        fh.write(bytes(tampered))
                    os.replace(path / "swap.tmp", path / shard)
                opens.append(shard)
            return handle

        return open_

    monkeypatch.setattr(io, "open", swapping(real_io_open))
    monkeypatch.setattr(builtins, "open", swapping(real_open))
    loaded = ck.load_checkpoint(path)
    assert opens == [shard] and (path / shard).read_bytes() == bytes(tampered)
    assert all(loaded.params[n].tobytes() == v.tobytes() for n, v in params.items())


def test_verify_digests_returns_the_names_it_verified(sharded):
    path, _, _ = sharded
    recorded = json.loads((path / ck.DIGESTS_FILE).read_text())
    assert ck.verify_digests(path) == sorted(recorded)
    shard = sorted(set(_index(path)["weight_map"].values()))[0]
    with pytest.raises(ck.CheckpointError, match=f"{shard}: sha256"):  # the bytes given count
        ck.verify_digests(path, {shard: b"not the shard"})
    (path / ck.DIGESTS_FILE).unlink()
    assert ck.verify_digests(path) is None


# ---------------------------------------------------------------- weights_digest


def test_weights_digest_of_a_single_file_is_its_sha256(tmp_path, model_params):
    model, params = model_params
    out = ck.save_checkpoint(tmp_path / "run", 5, params, full_stamps("gpt2", model))
    digest = ck.sha256_file(out / ck.MODEL_FILE)
    assert {ck.weights_digest(p) for p in (tmp_path / "run", out, out / ck.MODEL_FILE)} == {digest}
    assert ck.inspect_checkpoint(out)["sha256"] == digest


def test_weights_digest_of_shards_covers_every_shard(sharded):
    path, _, _ = sharded
    shards = list(dict.fromkeys(_index(path)["weight_map"].values()))
    lines = "".join(f"{ck.sha256_file(path / f)}  {f}\n" for f in [ck.INDEX_FILE, *shards])
    digest = ck.weights_digest(path)
    assert digest == hashlib.sha256(lines.encode()).hexdigest()
    assert digest != ck.sha256_file(path / ck.INDEX_FILE)
    assert ck.weights_digest(path.parent) == ck.weights_digest(path / ck.INDEX_FILE) == digest
    assert ck.inspect_checkpoint(path)["sha256"] == digest
    if shutil.which("sha256sum"):  # the documented way to recompute it
        files = " ".join([ck.INDEX_FILE, *sorted(shards)])
        out = subprocess.run(f"sha256sum {files} | sha256sum", shell=True, cwd=path,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert out.stdout.split()[0] == digest
    index_before = ck.sha256_file(path / ck.INDEX_FILE)
    data = bytearray((path / shards[-1]).read_bytes())
    data[-1] ^= 0xFF  # a weight changes, the index does not
    (path / shards[-1]).write_bytes(bytes(data))
    assert ck.sha256_file(path / ck.INDEX_FILE) == index_before
    assert ck.weights_digest(path) != digest
    (path / shards[1]).unlink()
    with pytest.raises(ck.CheckpointError, match=f"{shards[1]}: missing shard"):
        ck.weights_digest(path)


def test_init_from_shards_stamps_the_digest_of_the_weights_not_of_the_index(tmp_path):
    from kernels.train import TrainConfig, train
    from tests.core.helpers import MICRO

    def cfg(**changes):
        base = dict(family="gpt2", model=MICRO, seed=1, steps=2, batch_size=4, eval_every=2,
                    ckpt_every=2, eval_windows=8, warmup=1, lr=3e-3, min_lr=3e-4)  # fmt: skip
        return TrainConfig(**{**base, **changes})

    src = train(cfg(), tmp_path / "src")
    single_file = src.checkpoint / ck.MODEL_FILE
    assert src.weights_sha256 == ck.sha256_file(single_file)  # unchanged for single files
    loaded = ck.load_checkpoint(src.checkpoint)
    limit = _total(loaded.params) // 4
    sharded = ck.save_checkpoint(
        tmp_path / "sharded", loaded.step, loaded.params, loaded.stamps, max_shard_bytes=limit
    )
    train(cfg(seed=2), tmp_path / "ft-single", init=src.checkpoint)
    train(cfg(seed=2), tmp_path / "ft-sharded", init=sharded)
    assert ck.read_stamps(tmp_path / "ft-single")["init_sha256"] == ck.sha256_file(single_file)
    stamped = ck.read_stamps(tmp_path / "ft-sharded")["init_sha256"]
    assert stamped == ck.weights_digest(sharded) != ck.sha256_file(sharded / ck.INDEX_FILE)
