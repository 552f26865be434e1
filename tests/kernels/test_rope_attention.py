"""Rotary embedding and causal attention: references, finite differences, causality."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.ops import (
    causal_attention,
    causal_attention_backward,
    rope,
    rope_backward,
    rope_tables,
)
from tests import naive

RNG = np.random.default_rng(2)


@pytest.mark.parametrize("pos0", [0, 5])
def test_rope_matches_reference(pos0):
    x = RNG.standard_normal((2, 7, 12)).astype(np.float32)
    cos, sin = rope_tables(16, 6)
    np.testing.assert_allclose(
        rope(x, 2, cos, sin, pos0), naive.rope(x, 2, pos0=pos0), rtol=1e-5, atol=1e-6
    )


def test_rope_is_a_rotation_and_backward_is_its_inverse():
    x = RNG.standard_normal((1, 5, 8))
    cos, sin = rope_tables(5, 4, dtype=np.float64)
    y = rope(x, 2, cos, sin)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1))
    g = RNG.standard_normal(x.shape)

    def loss():
        return float((rope(x, 2, cos, sin) * g).sum())

    np.testing.assert_allclose(
        rope_backward(g, 2, cos, sin), naive.numgrad(loss, x), rtol=1e-6, atol=1e-8
    )


def test_rope_rejects_positions_beyond_tables():
    cos, sin = rope_tables(4, 4)
    with pytest.raises(ValueError, match="exceed the 4 positions"):
        rope(np.zeros((1, 3, 4), np.float32), 1, cos, sin, pos0=2)
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_tables(4, 3)


def test_attention_matches_reference():
    q, k, v = (RNG.standard_normal((2, 9, 12)).astype(np.float32) for _ in range(3))
    out, probs = causal_attention(q, k, v, 3)
    ref_out, ref_p = naive.causal_attention(q, k, v, 3)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, ref_p, rtol=1e-5, atol=1e-6)
    assert np.all(np.triu(probs[0, 0], 1) == 0)


def test_attention_backward_finite_differences():
    q, k, v = (RNG.standard_normal((2, 4, 6)) for _ in range(3))
    g = RNG.standard_normal((2, 4, 6))

    def loss():
        return float((causal_attention(q, k, v, 2)[0] * g).sum())

    _, probs = causal_attention(q, k, v, 2)
    dq, dk, dv = causal_attention_backward(g, q, k, v, probs, 2)
    for analytic, wrt in ((dq, q), (dk, k), (dv, v)):
        np.testing.assert_allclose(analytic, naive.numgrad(loss, wrt), rtol=1e-6, atol=1e-8)


def test_attention_is_causal():
    q, k, v = (RNG.standard_normal((1, 8, 4)).astype(np.float32) for _ in range(3))
    out, _ = causal_attention(q, k, v, 1)
    k2, v2 = k.copy(), v.copy()
    k2[:, 5:] = 1e3
    v2[:, 5:] = -1e3
    out2, _ = causal_attention(q, k2, v2, 1)
    np.testing.assert_array_equal(out[:, :5], out2[:, :5])


@pytest.mark.parametrize("scale", [0.0, 1e2, 1e4])
def test_attention_extreme_scores_and_long_sequence_finite(scale):
    t_len = 512
    q = (RNG.standard_normal((1, t_len, 8)) * scale).astype(np.float32)
    k = (RNG.standard_normal((1, t_len, 8)) * scale).astype(np.float32)
    v = RNG.standard_normal((1, t_len, 8)).astype(np.float32)
    out, probs = causal_attention(q, k, v, 2)
    assert np.isfinite(out).all() and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-4)
    grads = causal_attention_backward(np.ones_like(out), q, k, v, probs, 2)
    assert all(np.isfinite(g).all() for g in grads)


def test_attention_rejects_mismatched_heads():
    x = np.zeros((1, 2, 6), np.float32)
    with pytest.raises(ValueError, match="must split into n_head=4"):
        causal_attention(x, x, x, 4)
