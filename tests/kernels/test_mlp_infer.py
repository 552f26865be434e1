"""MLP classifier and inference helpers (generation, perplexity, predict)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.config import MLPConfig, micro_config
from kernels.infer import generate, perplexity, predict
from kernels.models.mlp import MLPClassifier
from kernels.models.registry import build_model
from kernels.optim import AdamW
from kernels.reference import reference_loss
from tests import naive


def test_mlp_gradients_match_finite_differences():
    mlp = MLPClassifier(MLPConfig(n_in=6, hidden=(5, 4), n_out=3))
    rng = np.random.default_rng(0)
    params = {
        k: v.astype(np.float64) + 0.1 * rng.standard_normal(v.shape)
        for k, v in mlp.init_params(0).items()
    }
    x = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)
    loss, grads = mlp.loss_and_grads(params, x, y)
    logits = naive.linear(
        np.maximum(
            naive.linear(
                np.maximum(naive.linear(x, params["layers.0.weight"], params["layers.0.bias"]), 0),
                params["layers.1.weight"],
                params["layers.1.bias"],
            ),
            0,
        ),
        params["layers.2.weight"],
        params["layers.2.bias"],
    )
    assert loss == pytest.approx(naive.cross_entropy(logits, y), rel=1e-12)
    for name, arr in params.items():
        fd = naive.numgrad(lambda: mlp.loss_and_grads(params, x, y)[0], arr)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-9)


def test_mlp_trains_on_separable_data_and_predicts():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((10, 64)).astype(np.float32) * 3
    y = rng.integers(0, 10, 600)
    x = (centers[y] + rng.standard_normal((600, 64)).astype(np.float32)).astype(np.float32)
    mlp = MLPClassifier(MLPConfig())
    params = mlp.init_params(0)
    opt = AdamW(lr=1e-2, weight_decay=0.0)
    first = None
    for step in range(40):
        idx = slice((step * 100) % 600, (step * 100) % 600 + 100)
        loss, grads = mlp.loss_and_grads(params, x[idx], y[idx])
        first = loss if first is None else first
        opt.step(params, grads)
    assert loss < first / 4
    pred = predict(mlp, params, x)
    assert pred.dtype == np.int64 and pred.shape == (600,)
    assert (pred == y).mean() > 0.95


def test_mlp_deterministic_and_validates():
    mlp = MLPClassifier(MLPConfig())
    p = mlp.init_params(3)
    x = np.random.default_rng(2).standard_normal((16, 64)).astype(np.float32)
    y = np.arange(16) % 10
    a = mlp.loss_and_grads(p, x, y)
    b = mlp.loss_and_grads(p, x, y)
    assert a[0] == b[0] and all(a[1][k].tobytes() == b[1][k].tobytes() for k in a[1])
    with pytest.raises(ValueError, match=r"x must be a 2-D array \[n, 64\]"):
        mlp.forward(p, x[:, :10])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        mlp.loss_and_grads(p, x, y + 10)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_generation_same_with_and_without_cache(family):
    model = build_model(micro_config(family))
    params = model.init_params(1)
    rng = np.random.default_rng(0)
    for k in params:
        params[k] += 0.3 * rng.standard_normal(params[k].shape).astype(np.float32)
    prompt = np.array([3, 1, 4], np.int32)
    a = generate(model, params, prompt, 5)
    b = generate(model, params, prompt, 5, use_cache=False)
    assert a.shape == (8,) and a.dtype == np.int32
    np.testing.assert_array_equal(a[:3], prompt)
    np.testing.assert_array_equal(a, b)
    batch = generate(model, params, np.stack([prompt, prompt[::-1]]), 5)
    np.testing.assert_array_equal(batch[0], a)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sampling_is_seeded_and_top_k_one_is_greedy(family):
    model = build_model(micro_config(family))
    params = model.init_params(2)
    prompt = np.array([[5, 6]], np.int32)
    s1 = generate(model, params, prompt, 6, temperature=1.0, top_k=5, seed=11)
    s2 = generate(model, params, prompt, 6, temperature=1.0, top_k=5, seed=11)
    s3 = generate(model, params, prompt, 6, temperature=1.0, top_k=5, seed=11, use_cache=False)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(s1, s3)
    greedy = generate(model, params, prompt, 6)
    np.testing.assert_array_equal(
        generate(model, params, prompt, 6, temperature=0.7, top_k=1, seed=3), greedy
    )
    with pytest.raises(ValueError, match="exceeds the model context n_ctx=8"):
        generate(model, params, prompt, 7)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_perplexity_is_exp_of_mean_loss(family):
    model = build_model(micro_config(family))
    params = model.init_params(4)
    tokens = np.random.default_rng(3).integers(0, 23, (5, 9)).astype(np.int32)
    ppl = perplexity(model, params, tokens, batch_size=2)
    ref = math.exp(reference_loss(family, model.config, params, tokens))
    assert ppl == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("t0", [1, 3, 7])
@pytest.mark.parametrize("bsz", [1, 3])
def test_greedy_in_one_call_is_the_per_token_loop(family, t0, bsz):
    # generate() at temperature 0 runs the whole greedy loop in one compiled call
    # (decode_greedy); it must give the tokens of feeding forward_step one token at a
    # time and taking np.argmax, prompt lengths from 1 to n_ctx - 1, batch 1 and 3
    model = build_model(micro_config(family))
    params = model.init_params(5)
    rng = np.random.default_rng(t0 * 10 + bsz)
    for k in params:
        params[k] += 0.3 * rng.standard_normal(params[k].shape).astype(np.float32)
    prompt = rng.integers(0, model.config.vocab_size, (bsz, t0)).astype(np.int32)
    n_ctx = model.config.n_ctx
    got = generate(model, params, prompt, n_ctx - t0)
    out = np.empty((bsz, n_ctx), np.int32)
    out[:, :t0] = prompt
    cache = model.new_cache(bsz)
    for j in range(t0):
        logits = model.forward_step(params, out[:, j].copy(), cache)
    for t in range(t0, n_ctx):
        out[:, t] = np.argmax(logits, axis=1)
        if t + 1 < n_ctx:
            logits = model.forward_step(params, out[:, t].copy(), cache)
    np.testing.assert_array_equal(got, out)
    cache = model.new_cache(bsz)
    model.decode_greedy(params, out.copy(), t0, cache)
    assert cache.pos == n_ctx - 1


def test_argmax_first_is_numpys_argmax_with_ties_and_nan():
    from kernels.models.head import _argmax_first

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 33):
        for _ in range(50):
            x = np.round(rng.standard_normal(n) * 2).astype(np.float32)  # many ties
            if rng.random() < 0.3:
                x[rng.integers(n)] = np.nan
            if rng.random() < 0.2:
                x[rng.integers(n)] = np.inf
            assert _argmax_first(x) == int(np.argmax(x)), x


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decode_greedy_refuses_what_its_kernel_would_read_unchecked(family):
    # the compiled loop indexes the embedding with the prompt's ids: a bad id, a full or
    # used cache, a wrong array never reach it
    model = build_model(micro_config(family))
    params = model.init_params(0)
    n_ctx, vocab = model.config.n_ctx, model.config.vocab_size
    out = np.zeros((2, n_ctx), np.int32)
    cases = [
        (lambda o: o.__setitem__((1, 0), vocab), "token ids must lie in"),
        (lambda o: o.__setitem__((0, 1), -1), "token ids must lie in"),
    ]
    for mutate, msg in cases:
        bad = out.copy()
        mutate(bad)
        with pytest.raises(ValueError, match=msg):
            model.decode_greedy(params, bad, 2, model.new_cache(2))
    with pytest.raises(ValueError, match="need 1 <= t0 < total"):
        model.decode_greedy(params, out.copy(), n_ctx, model.new_cache(2))
    with pytest.raises(ValueError, match="need 1 <= t0 < total"):
        model.decode_greedy(params, np.zeros((2, n_ctx + 1), np.int32), 1, model.new_cache(2))
    with pytest.raises(ValueError, match="C-contiguous int32"):
        model.decode_greedy(params, out.astype(np.int64), 1, model.new_cache(2))
    with pytest.raises(ValueError, match="C-contiguous int32"):
        model.decode_greedy(params, out, 1, model.new_cache(3))
    used = model.new_cache(2)
    model.forward_step(params, np.zeros(2, np.int32), used)
    with pytest.raises(ValueError, match="needs an empty cache"):
        model.decode_greedy(params, out.copy(), 1, used)
    model.decode_greedy(params, out, 1, model.new_cache(2))  # and a good call works
    assert out[:, 1:].min() >= 0 and out.max() < vocab


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_cache_of_another_shape_is_refused_before_a_kernel_indexes_it(family):
    # the step kernels index the cache by layer, head and position unchecked: a cache
    # from another config (fewer layers, a longer context) must not reach them
    model = build_model(micro_config(family))
    params = model.init_params(0)
    c = model.config
    other = build_model(micro_config(family).__class__(**{**c.__dict__, "n_ctx": c.n_ctx * 8}))
    longer = other.new_cache(1)
    with pytest.raises(ValueError, match=r"cache k/v must be \[n_layer, B, n_head, n_ctx"):
        model.forward_step(params, np.zeros(1, np.int32), longer)
    with pytest.raises(ValueError, match=r"cache k/v must be \[n_layer, B, n_head, n_ctx"):
        model.decode_greedy(params, np.zeros((1, c.n_ctx * 8), np.int32), 1, longer)
    short = model.new_cache(1)
    short.k, short.v = short.k[:1], short.v[:1]
    if c.n_layer > 1:
        with pytest.raises(ValueError, match="cache k/v must be"):
            model.decode_greedy(params, np.zeros((1, c.n_ctx), np.int32), 1, short)
