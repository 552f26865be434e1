"""Helpers of the --init corruption check (acceptance/training_init.py) and the mutants of
AC-TRAIN-005 and AC-REL-004 that prove its family coverage."""

from __future__ import annotations

import numpy as np
import pytest

from acceptance import training as tr
from acceptance import training_init as ti
from falsifiers.mutants import release_core as release_mutants
from falsifiers.mutants import training as mutants
from kernels import checkpoint as ck
from tests.core.helpers import micro_model


def model_tensors(family):
    model = micro_model(family)
    return model.init_params(0), list(model.param_shapes())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ti.KINDS)
def test_each_corruption_changes_exactly_what_it_says(family, kind):
    tensors, order = model_tensors(family)
    for index in range(len(order)):
        bad, names = ti.corrupt(tensors, order, kind, index)
        name = order[index]
        assert tensors.keys() == set(order)  # the source is not touched
        changed = {n for n in set(bad) | set(tensors) if n not in bad or n not in tensors}
        if kind == "missing":
            assert changed == {name} and names == [name]
        elif kind == "renamed":
            assert changed == {name, names[1]} and names[0] == name
            assert ck.detect_tensor_family(bad) == family  # still reads as its family
        elif kind == "extra":
            assert changed == set(names) and names[0].endswith(".inv_freq")
        elif kind == "shape":
            assert not changed and bad[name].shape != tensors[name].shape
        else:
            assert not changed and bad[name].dtype == np.float16
        ck.check_coverage(tensors, micro_model(family).param_shapes(), "x", np.float32)
        with pytest.raises(ck.CheckpointError):
            ck.check_coverage(bad, micro_model(family).param_shapes(), "x", np.float32)


def test_the_cases_of_one_family_touch_different_tensors():
    tensors, order = model_tensors("llama")
    hit = {ti.corrupt(tensors, order, kind, i)[1][0] for i, kind in enumerate(ti.KINDS * 2)}
    assert len(hit) == 2 * len(ti.KINDS)


def test_names_any_needs_the_whole_tensor_name():
    assert ti.names_any("x: missing layers.1.bias; use", ["layers.1.bias"])
    assert ti.names_any("params['layers.1.bias'] must", ["layers.1.bias"])
    assert not ti.names_any("missing layers.1.bias_0", ["layers.1.bias"])
    assert not ti.names_any("missing model.layers.1.bias", ["layers.1.bias"])


def test_family_params_picks_each_familys_model():
    params = {"models": {"mlp": {"hidden": [16]}}, "model": {"d_model": 16}, "steps": 2}
    assert tr.family_params(params, "mlp") == {"model": {"hidden": [16]}, "steps": 2}
    assert tr.family_params(params, "gpt2") == {"model": {"d_model": 16}, "steps": 2}


def stamps_of(family):
    return {**ck.identity_stamps(family)}


@pytest.mark.parametrize(("tensors", "claim"), [("gpt2", "llama"), ("llama", "gpt2")])
def test_lm_only_identity_check_still_refuses_lm_contradictions(tensors, claim):
    names = list(micro_model(tensors).param_shapes())
    with pytest.raises(ck.CheckpointError, match=f"'{claim}'.*'{tensors}'"):
        mutants.identity_check_lm_only(stamps_of(claim), names, "x")


def test_lm_only_identity_check_lets_a_mislabelled_classifier_through():
    names = ["layers.0.weight", "layers.0.bias"]
    with pytest.raises(ck.CheckpointError):
        ck.check_architecture_stamp(stamps_of("llama"), names, "x")
    assert mutants.identity_check_lm_only(stamps_of("llama"), names, "x") == "mlp"


def test_coverage_mutants_each_miss_their_own_corruption():
    model = micro_model("gpt2")
    shapes, params = model.param_shapes(), model.init_params(0)
    wide = {**params, "transformer.wpe.weight": params["transformer.wpe.weight"][:-1]}
    half = {**params, "transformer.wpe.weight": params["transformer.wpe.weight"].astype("f2")}
    more = {**params, "transformer.h.0.attn.bias": np.ones(2, np.float32)}
    mutants.coverage_names_only(wide, shapes, "x", np.float32)
    mutants.coverage_ignoring_extras(more, shapes, "x", np.float32)
    mutants.coverage_casting_dtypes(half, shapes, "x", np.float32)
    with pytest.raises(ck.CheckpointError) as err:
        mutants.coverage_counting_not_naming(more, shapes, "x", np.float32)
    assert "transformer.h.0.attn.bias" not in str(err.value)


@pytest.mark.parametrize("family", ["gpt2", "llama", "mlp"])
def test_hf_identity_lm_only_breaks_the_classifier_stamps_only(family, monkeypatch):
    monkeypatch.setattr(release_mutants, "_build_stamps", lambda: stamps_of(family))
    stamps = release_mutants.stamps_hf_identity_lm_only()
    assert (stamps == stamps_of(family)) == (family != "mlp")
