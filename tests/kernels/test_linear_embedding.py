"""linear and embedding kernels vs NumPy references; backward by finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.ops import embedding, embedding_backward, linear, linear_backward
from tests import naive

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("layout", ["io", "oi"])
def test_linear_matches_reference(layout):
    x = RNG.standard_normal((17, 12)).astype(np.float32)
    w = RNG.standard_normal((12, 9) if layout == "io" else (9, 12)).astype(np.float32)
    b = RNG.standard_normal(9).astype(np.float32)
    y = linear(x, w, b, layout=layout)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, naive.linear(x, w, b, layout), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["io", "oi"])
def test_linear_backward_finite_differences(layout):
    x = RNG.standard_normal((5, 4))
    w = RNG.standard_normal((4, 3) if layout == "io" else (3, 4))
    b = RNG.standard_normal(3)
    gy = RNG.standard_normal((5, 3))

    def loss():
        return float((linear(x, w, b, layout=layout) * gy).sum())

    dx, dw, db = linear_backward(x, w, gy, layout=layout)
    np.testing.assert_allclose(dx, naive.numgrad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, naive.numgrad(loss, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, naive.numgrad(loss, b), rtol=1e-6, atol=1e-8)


def test_linear_rejects_bad_inputs():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="x has 4 features"):
        linear(x, np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="w must have dtype float32"):
        linear(x, np.zeros((4, 2), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        linear(np.zeros((4, 3), np.float32).T, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="b must have shape"):
        linear(x, np.zeros((4, 2), np.float32), np.zeros(3, np.float32))


def test_embedding_matches_reference_with_and_without_positions():
    wte = RNG.standard_normal((11, 6)).astype(np.float32)
    wpe = RNG.standard_normal((8, 6)).astype(np.float32)
    tok = RNG.integers(0, 11, (3, 5)).astype(np.int32)
    np.testing.assert_array_equal(embedding(wte, tok), naive.embedding(wte, tok))
    np.testing.assert_allclose(embedding(wte, tok, wpe), naive.embedding(wte, tok, wpe), rtol=1e-6)


def test_embedding_backward_finite_differences():
    wte = RNG.standard_normal((7, 3))
    wpe = RNG.standard_normal((5, 3))
    tok = np.array([[1, 1, 4, 0], [6, 1, 2, 2]], dtype=np.int64)  # repeated ids accumulate
    g = RNG.standard_normal((8, 3))

    def loss():
        return float((embedding(wte, tok, wpe) * g).sum())

    dwte, dwpe = embedding_backward(tok, g, 7, n_positions=5)
    np.testing.assert_allclose(dwte, naive.numgrad(loss, wte), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dwpe, naive.numgrad(loss, wpe), rtol=1e-6, atol=1e-8)


def test_embedding_rejects_out_of_range_ids():
    wte = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"tokens values must lie in \[0, 4\)"):
        embedding(wte, np.array([[0, 4]], np.int32))
    with pytest.raises(ValueError, match="tokens must be int32 or int64"):
        embedding(wte, np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="exceeds the 2 learned positions"):
        embedding(wte, np.zeros((1, 3), np.int32), np.zeros((2, 2), np.float32))
