"""Kernels against the NumPy references on random shapes (Hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.ops import causal_attention, cross_entropy_backward, layernorm, rope, rope_tables
from tests import naive

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(
    n=st.integers(1, 9),
    d=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_layernorm_random_shapes(n, d, seed, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * scale).astype(np.float32)
    w, b = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    y, _, _ = layernorm(x, w, b, 1e-5)
    np.testing.assert_allclose(y, naive.layernorm(x, w, b, 1e-5), rtol=1e-4, atol=1e-4)


@SETTINGS
@given(
    n=st.integers(1, 6),
    v=st.integers(2, 300),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]),
)
def test_cross_entropy_random_shapes(n, v, seed, scale):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, v)) * scale).astype(np.float32)
    t = rng.integers(0, v, n)
    loss, dz = cross_entropy_backward(z, t)
    ref = naive.cross_entropy(z, t)
    assert abs(loss - ref) <= 1e-5 * max(1.0, abs(ref))
    np.testing.assert_allclose(dz, naive.cross_entropy_grad(z, t), rtol=1e-4, atol=1e-6)


@SETTINGS
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 20),
    h=st.integers(1, 3),
    hd=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_attention_random_shapes(b, t, h, hd, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, t, h * hd)).astype(np.float32) for _ in range(3))
    out, probs = causal_attention(q, k, v, h)
    ref_out, ref_p = naive.causal_attention(q, k, v, h)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs, ref_p, rtol=1e-4, atol=1e-6)


@SETTINGS
@given(
    b=st.integers(1, 2),
    t=st.integers(1, 12),
    h=st.integers(1, 3),
    half=st.integers(1, 6),
    pos0=st.integers(0, 20),
    seed=st.integers(0, 2**16),
)
def test_rope_random_shapes(b, t, h, half, pos0, seed):
    rng = np.random.default_rng(seed)
    hd = 2 * half
    x = rng.standard_normal((b, t, h * hd)).astype(np.float32)
    cos, sin = rope_tables(pos0 + t, hd)
    np.testing.assert_allclose(
        rope(x, h, cos, sin, pos0), naive.rope(x, h, pos0=pos0), rtol=1e-5, atol=1e-5
    )
