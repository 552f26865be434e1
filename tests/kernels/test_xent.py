"""Softmax cross-entropy: reference, gradient, stability on extreme logits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.ops import cross_entropy, cross_entropy_backward, cross_entropy_rows
from tests import naive

RNG = np.random.default_rng(3)


def test_cross_entropy_matches_reference():
    z = (RNG.standard_normal((13, 31)) * 5).astype(np.float32)
    t = RNG.integers(0, 31, 13)
    assert cross_entropy(z, t) == pytest.approx(naive.cross_entropy(z, t), rel=1e-6)
    np.testing.assert_allclose(
        cross_entropy_rows(z, t), naive.cross_entropy_rows(z, t), rtol=1e-5, atol=1e-6
    )
    loss, dz = cross_entropy_backward(z, t)
    assert loss == pytest.approx(naive.cross_entropy(z, t), rel=1e-6)
    np.testing.assert_allclose(dz, naive.cross_entropy_grad(z, t), rtol=1e-5, atol=1e-7)


def test_cross_entropy_gradient_finite_differences():
    z = RNG.standard_normal((4, 5))
    t = np.array([0, 4, 4, 2])
    _, dz = cross_entropy_backward(z, t)
    np.testing.assert_allclose(
        dz, naive.numgrad(lambda: cross_entropy(z, t), z), rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize("scale", [0.0, 1e4, 1e30])
def test_cross_entropy_extreme_logits_finite(scale):
    z = (RNG.standard_normal((6, 50)) * scale).astype(np.float32)
    z[0, :] = 1e4
    z[1, 3] = -1e4
    t = RNG.integers(0, 50, 6)
    loss, dz = cross_entropy_backward(z, t)
    assert np.isfinite(loss) and np.isfinite(dz).all()
    np.testing.assert_allclose(dz.sum(1), 0.0, atol=1e-6)


def test_cross_entropy_uniform_and_saturated_rows():
    z = np.zeros((2, 50), np.float32)
    z[1] = 1e4
    assert cross_entropy(z, np.array([7, 3])) == pytest.approx(np.log(50), rel=1e-6)
    z = np.zeros((1, 3), np.float32)
    z[0, 0] = 1e4
    assert cross_entropy(z, np.array([0])) == pytest.approx(0.0, abs=1e-6)
    assert cross_entropy(z, np.array([1])) == pytest.approx(1e4, rel=1e-6)


def test_cross_entropy_does_not_modify_logits():
    z = RNG.standard_normal((3, 4)).astype(np.float32)
    before = z.copy()
    cross_entropy_backward(z, np.array([0, 1, 2]))
    np.testing.assert_array_equal(z, before)


def test_cross_entropy_rejects_bad_targets():
    with pytest.raises(ValueError, match=r"targets values must lie in \[0, 4\)"):
        cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 4]))
    with pytest.raises(ValueError, match="targets must have 2 entries"):
        cross_entropy(np.zeros((2, 4), np.float32), np.array([0]))


@settings(max_examples=40, deadline=None)
@given(shift=st.floats(-1e4, 1e4), scale=st.floats(0, 50))
def test_cross_entropy_is_shift_invariant(shift, scale):
    z = (np.linspace(-1, 1, 12).reshape(2, 6) * scale).astype(np.float64)
    t = np.array([1, 5])
    a = cross_entropy(z, t)
    b = cross_entropy(z + shift, t)
    assert np.isfinite(b)
    assert b == pytest.approx(a, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("n", [*range(1, 41), 63, 64, 1024, 1031])
def test_rowmax_is_the_largest_element_wherever_it_sits(n):
    # 8 running maxima over blocks of 8, then the tail: the largest element must win
    # from any position (block lanes, the tail, the first block), ties and infinities too
    from kernels.ops.xent import _rowmax

    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    assert _rowmax(x) == x.max()
    for pos in {0, n // 2, n - 1, min(7, n - 1), min(8, n - 1)}:
        y = x.copy()
        y[pos] = 50.0
        assert _rowmax(y) == np.float32(50.0)
        y[pos] = np.inf
        assert _rowmax(y) == np.inf
    assert _rowmax(np.full(n, -np.inf, dtype=np.float32)) == -np.inf
    assert _rowmax(np.round(x * 2) / 2) == (np.round(x * 2) / 2).max()  # ties
