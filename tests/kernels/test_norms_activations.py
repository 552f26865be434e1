"""LayerNorm, RMSNorm, GELU, SiLU, SwiGLU: references, finite differences, extremes."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.ops import (
    gelu,
    gelu_backward,
    layernorm,
    layernorm_backward,
    rmsnorm,
    rmsnorm_backward,
    silu,
    silu_backward,
    swiglu,
    swiglu_backward,
)
from tests import naive

RNG = np.random.default_rng(1)
EPS = 1e-5


def test_layernorm_matches_reference():
    x = (RNG.standard_normal((9, 16)) * 3 + 2).astype(np.float32)
    w = RNG.standard_normal(16).astype(np.float32)
    b = RNG.standard_normal(16).astype(np.float32)
    y, mean, rstd = layernorm(x, w, b, EPS)
    np.testing.assert_allclose(y, naive.layernorm(x, w, b, EPS), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(1), rtol=1e-5, atol=1e-6)


def test_layernorm_backward_finite_differences():
    x = RNG.standard_normal((4, 6))
    w = RNG.standard_normal(6)
    b = RNG.standard_normal(6)
    g = RNG.standard_normal((4, 6))

    def loss():
        return float((layernorm(x, w, b, EPS)[0] * g).sum())

    _, mean, rstd = layernorm(x, w, b, EPS)
    dx, dw, db = layernorm_backward(g, x, w, mean, rstd)
    for analytic, wrt in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, naive.numgrad(loss, wrt), rtol=1e-5, atol=1e-7)


def test_rmsnorm_matches_reference_and_finite_differences():
    x32 = RNG.standard_normal((9, 16)).astype(np.float32)
    w32 = RNG.standard_normal(16).astype(np.float32)
    np.testing.assert_allclose(
        rmsnorm(x32, w32, EPS)[0], naive.rmsnorm(x32, w32, EPS), rtol=1e-5, atol=1e-6
    )
    x = RNG.standard_normal((4, 6))
    w = RNG.standard_normal(6)
    g = RNG.standard_normal((4, 6))

    def loss():
        return float((rmsnorm(x, w, EPS)[0] * g).sum())

    _, rstd = rmsnorm(x, w, EPS)
    dx, dw = rmsnorm_backward(g, x, w, rstd)
    np.testing.assert_allclose(dx, naive.numgrad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, naive.numgrad(loss, w), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [0.0, 1e-20, 1e4, 1e20])
def test_norms_finite_on_extreme_rows(scale):
    x = (RNG.standard_normal((3, 32)) * scale).astype(np.float32)
    x[0] = scale  # a constant row: zero variance
    w = np.ones(32, np.float32)
    b = np.zeros(32, np.float32)
    y, mean, rstd = layernorm(x, w, b, EPS)
    g = np.ones_like(x)
    assert np.isfinite(y).all()
    assert all(np.isfinite(a).all() for a in layernorm_backward(g, x, w, mean, rstd))
    y, rstd = rmsnorm(x, w, EPS)
    assert np.isfinite(y).all()
    assert all(np.isfinite(a).all() for a in rmsnorm_backward(g, x, w, rstd))


def test_norm_rejects_bad_eps_and_shapes():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="eps must be > 0"):
        rmsnorm(x, np.ones(3, np.float32), 0.0)
    with pytest.raises(ValueError, match=r"w must have shape \(3,\)"):
        layernorm(x, np.ones(4, np.float32), np.ones(3, np.float32))


@pytest.mark.parametrize(
    "fwd,bwd,ref", [(gelu, gelu_backward, naive.gelu), (silu, silu_backward, naive.silu)]
)
def test_activation_reference_and_finite_differences(fwd, bwd, ref):
    x32 = (RNG.standard_normal((5, 7)) * 4).astype(np.float32)
    np.testing.assert_allclose(fwd(x32), ref(x32), rtol=1e-5, atol=1e-6)
    x = RNG.standard_normal((3, 5)) * 3
    g = RNG.standard_normal((3, 5))

    def loss():
        return float((fwd(x) * g).sum())

    np.testing.assert_allclose(bwd(x, g), naive.numgrad(loss, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fwd,bwd", [(gelu, gelu_backward), (silu, silu_backward)])
def test_activation_extremes_are_finite(fwd, bwd):
    x = np.array([0.0, -0.0, 1e4, -1e4, 1e30, -1e30, 3e38, -3e38], np.float32)
    y = fwd(x)
    d = bwd(x, np.ones_like(x))
    assert np.isfinite(y).all() and np.isfinite(d).all()
    np.testing.assert_allclose(y[[2, 3]], [1e4, 0.0], atol=1e-3)


def test_swiglu_reference_and_finite_differences():
    g32 = (RNG.standard_normal((4, 6)) * 3).astype(np.float32)
    u32 = RNG.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(swiglu(g32, u32), naive.swiglu(g32, u32), rtol=1e-5, atol=1e-6)
    gate = RNG.standard_normal((3, 4)) * 2
    up = RNG.standard_normal((3, 4))
    dh = RNG.standard_normal((3, 4))

    def loss():
        return float((swiglu(gate, up) * dh).sum())

    dg, du = swiglu_backward(gate, up, dh)
    np.testing.assert_allclose(dg, naive.numgrad(loss, gate), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(du, naive.numgrad(loss, up), rtol=1e-6, atol=1e-8)
