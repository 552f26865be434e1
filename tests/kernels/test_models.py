"""Transformer families: names, init, exact gradients, KV cache, causality, parity."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.config import ModelConfig, micro_config, tiny_config
from kernels.models.registry import build_model, detect_family
from kernels.reference import reference_forward, reference_loss
from tests import naive

FAMILIES = ["gpt2", "llama"]


def _perturbed(model, seed=0, dtype=np.float64, noise=0.3):
    """Init params plus noise so norms/biases are not at their trivial values."""
    rng = np.random.default_rng(seed + 100)
    params = model.init_params(seed)
    return {k: (v + noise * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}


def _tokens(cfg, bsz, t_len, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (bsz, t_len)).astype(np.int32)


def test_parameter_names_follow_real_checkpoints():
    gpt2 = build_model(tiny_config("gpt2", 512)).param_shapes()
    assert gpt2["transformer.h.0.attn.c_attn.weight"] == (128, 384)
    assert gpt2["transformer.h.1.mlp.c_proj.weight"] == (512, 128)
    assert gpt2["transformer.wpe.weight"] == (64, 128)
    assert "lm_head.weight" not in gpt2  # tied to wte
    llama = build_model(tiny_config("llama", 512)).param_shapes()
    assert llama["model.layers.0.self_attn.q_proj.weight"] == (128, 128)
    assert llama["model.layers.1.mlp.gate_proj.weight"] == (352, 128)
    assert llama["lm_head.weight"] == (512, 128)
    assert detect_family(gpt2) == "gpt2"
    assert detect_family(llama) == "llama"


def test_detect_family_refuses_unknown_and_mixed_names():
    with pytest.raises(ValueError, match="cannot tell the architecture"):
        detect_family(["encoder.layer.0.weight"])
    with pytest.raises(ValueError, match="mix architectures"):
        detect_family(["transformer.wte.weight", "model.layers.0.mlp.up_proj.weight"])


def test_config_validation_messages():
    with pytest.raises(ValueError, match="family must be one of gpt2, llama"):
        ModelConfig("bert", 1, 8, 2, 8, 10)
    with pytest.raises(ValueError, match="divisible by n_head"):
        ModelConfig("gpt2", 1, 10, 3, 8, 10)
    cfg = tiny_config("llama", 300)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("family", FAMILIES)
def test_init_params_deterministic_by_seed(family):
    model = build_model(micro_config(family))
    a, b, c = model.init_params(7), model.init_params(7), model.init_params(8)
    assert list(a) == list(model.param_shapes())
    for name, arr in a.items():
        assert arr.dtype == np.float32 and arr.flags.c_contiguous
        assert arr.shape == model.param_shapes()[name]
        assert arr.tobytes() == b[name].tobytes()
    assert any(a[n].tobytes() != c[n].tobytes() for n in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_and_grads_match_finite_differences(family):
    model = build_model(micro_config(family))
    params = _perturbed(model)
    tokens = _tokens(model.config, 2, 7)
    loss, grads = model.loss_and_grads(params, tokens)
    assert loss == pytest.approx(reference_loss(family, model.config, params, tokens), rel=1e-10)
    assert list(grads) == list(params)
    rng = np.random.default_rng(5)
    for name, arr in params.items():
        assert grads[name].shape == arr.shape and grads[name].dtype == arr.dtype
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            lp = model.loss_and_grads(params, tokens)[0]
            flat[i] = old - 1e-6
            lm = model.loss_and_grads(params, tokens)[0]
            flat[i] = old
            fd = (lp - lm) / 2e-6
            assert grads[name].reshape(-1)[i] == pytest.approx(fd, rel=1e-5, abs=1e-8), name


@pytest.mark.parametrize("family", FAMILIES)
def test_full_gradient_of_one_tensor_by_finite_differences(family):
    model = build_model(micro_config(family))
    params = _perturbed(model, seed=3)
    tokens = _tokens(model.config, 2, 5, seed=3)
    name = (
        "transformer.h.0.attn.c_attn.weight"
        if family == "gpt2"
        else "model.layers.0.self_attn.k_proj.weight"
    )
    _, grads = model.loss_and_grads(params, tokens)
    fd = naive.numgrad(lambda: model.loss_and_grads(params, tokens)[0], params[name])
    np.testing.assert_allclose(grads[name], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_grads_deterministic_and_inputs_untouched(family):
    model = build_model(micro_config(family))
    params = model.init_params(0)
    before = {k: v.copy() for k, v in params.items()}
    tokens = _tokens(model.config, 3, 9)
    l1, g1 = model.loss_and_grads(params, tokens)
    l2, g2 = model.loss_and_grads(params, tokens)
    assert l1 == l2
    for name in g1:
        assert g1[name].tobytes() == g2[name].tobytes()
        assert params[name].tobytes() == before[name].tobytes()


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_matches_numpy_reference_engine(family):
    model = build_model(tiny_config(family, 97))
    params = _perturbed(model, dtype=np.float32, noise=0.02)
    tokens = _tokens(model.config, 2, 64)
    logits = model.forward(params, tokens)
    assert logits.shape == (2, 64, 97) and logits.dtype == np.float32
    ref = reference_forward(family, model.config, params, tokens)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_step_with_cache_equals_full_forward(family):
    model = build_model(micro_config(family))
    params = _perturbed(model, dtype=np.float32, noise=0.1)
    tokens = _tokens(model.config, 3, model.config.n_ctx)
    full = model.forward(params, tokens)
    cache = model.new_cache(3)
    for t in range(tokens.shape[1]):
        step = model.forward_step(params, tokens[:, t], cache)
        np.testing.assert_allclose(step, full[:, t], rtol=1e-5, atol=1e-6)
    assert cache.pos == model.config.n_ctx
    with pytest.raises(ValueError, match="KV cache is full"):
        model.forward_step(params, tokens[:, 0], cache)


@pytest.mark.parametrize("family", FAMILIES)
def test_causality_later_tokens_never_change_earlier_logits(family):
    model = build_model(micro_config(family))
    params = _perturbed(model, dtype=np.float32, noise=0.1)
    tokens = _tokens(model.config, 2, model.config.n_ctx)
    base = model.forward(params, tokens)
    rng = np.random.default_rng(9)
    for t in range(tokens.shape[1] - 1):
        changed = tokens.copy()
        changed[:, t + 1 :] = rng.integers(0, model.config.vocab_size, changed[:, t + 1 :].shape)
        out = model.forward(params, changed)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_float32_loss_is_sane(family):
    model = build_model(tiny_config(family, 256))
    params = model.init_params(0)
    tokens = _tokens(model.config, 4, 65)
    loss, grads = model.loss_and_grads(params, tokens)
    assert abs(loss - np.log(256)) < 0.2
    assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_models_reject_bad_inputs(family):
    model = build_model(micro_config(family))
    params = model.init_params(0)
    with pytest.raises(ValueError, match="exceeds the context n_ctx=8"):
        model.forward(params, np.zeros((1, 9), np.int32))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 23\)"):
        model.forward(params, np.full((1, 3), 23, np.int32))
    with pytest.raises(ValueError, match="at least|>= 2 columns"):
        model.loss_and_grads(params, np.zeros((1, 1), np.int32))
    broken = dict(params)
    name = next(iter(broken))
    del broken[name]
    with pytest.raises(ValueError, match="missing 1 tensor"):
        model.forward(broken, np.zeros((1, 3), np.int32))
    broken = dict(params)
    broken[name] = broken[name][:, :2].copy()
    with pytest.raises(ValueError, match="must have shape"):
        model.forward(broken, np.zeros((1, 3), np.int32))


@pytest.mark.parametrize("family", FAMILIES)
def test_long_sequence_and_large_weights_stay_finite(family):
    cfg = ModelConfig(family, n_layer=1, d_model=16, n_head=2, n_ctx=512, vocab_size=50)
    model = build_model(cfg)
    params = model.init_params(0)
    tokens = _tokens(cfg, 1, 513)
    loss, grads = model.loss_and_grads(params, tokens)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    big = {k: v * np.float32(300.0) for k, v in params.items()}  # logits ~1e4 and beyond
    logits = model.forward(big, tokens[:, :-1])
    assert np.isfinite(logits).all() and np.abs(logits).max() > 1e4
    loss, grads = model.loss_and_grads(big, tokens)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_gradients_agree_with_float64(family):
    """The float32 path (vectorized exp, float32 BLAS) against the float64 path."""
    model = build_model(tiny_config(family, 97))
    p64 = _perturbed(model, dtype=np.float64, noise=0.02)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    tokens = _tokens(model.config, 2, 33)
    l64, g64 = model.loss_and_grads(p64, tokens)
    l32, g32 = model.loss_and_grads(p32, tokens)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name in g64:
        scale = np.abs(g64[name]).max() + 1e-12
        assert np.abs(g32[name] - g64[name]).max() / scale < 1e-3, name


@pytest.mark.parametrize("family", FAMILIES)
def test_adamw_training_learns_a_pattern(family):
    from kernels.optim import AdamW

    model = build_model(micro_config(family))
    params = model.init_params(0)
    pattern = np.array([1, 5, 2, 7, 3, 9, 4, 11, 6] * 2, np.int32)
    tokens = np.stack([pattern[i : i + 9] for i in range(4)])
    opt = AdamW(lr=3e-2, weight_decay=0.0)
    first, _ = model.loss_and_grads(params, tokens)
    for _ in range(60):
        loss, grads = model.loss_and_grads(params, tokens)
        opt.step(params, grads)
    assert loss < first / 5
