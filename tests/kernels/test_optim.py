"""AdamW and the learning-rate schedule against NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.optim import AdamW, global_grad_norm, lr_at
from tests import naive

RNG = np.random.default_rng(4)


def _params():
    return {"w": RNG.standard_normal((4, 3)), "b": RNG.standard_normal(3)}


def test_adamw_matches_reference_over_steps():
    params = _params()
    ref = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    opt = AdamW(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, clip_norm=None)
    for t in range(1, 6):
        grads = {k: RNG.standard_normal(x.shape) for k, x in params.items()}
        opt.step(params, grads)
        for k in ref:
            wd = 0.1 if ref[k].ndim >= 2 else 0.0
            ref[k], m[k], v[k] = naive.adamw_step(
                ref[k], grads[k], m[k], v[k], t, 1e-2, 0.9, 0.99, 1e-8, wd
            )
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-14)


def test_clipping_scales_to_max_norm():
    params = _params()
    grads = {k: np.full_like(x, 10.0) for k, x in params.items()}
    norm = global_grad_norm(grads)
    assert norm == pytest.approx(math.sqrt(15 * 100))
    a = {k: x.copy() for k, x in params.items()}
    b = {k: x.copy() for k, x in params.items()}
    AdamW(lr=0.1, weight_decay=0.0, clip_norm=1.0).step(a, grads)
    scaled = {k: g / (norm + 1e-6) for k, g in grads.items()}
    AdamW(lr=0.1, weight_decay=0.0, clip_norm=None).step(b, scaled)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12)


def test_state_dict_round_trip_continues_identically():
    params = {k: x.astype(np.float32) for k, x in _params().items()}
    grads = [
        {k: RNG.standard_normal(x.shape).astype(np.float32) for k, x in params.items()}
        for _ in range(4)
    ]
    p1 = {k: x.copy() for k, x in params.items()}
    opt1 = AdamW(lr=1e-2)
    for g in grads:
        opt1.step(p1, g)
    p2 = {k: x.copy() for k, x in params.items()}
    opt2 = AdamW(lr=1e-2)
    for g in grads[:2]:
        opt2.step(p2, g)
    state = opt2.state_dict()
    assert state["step"].dtype == np.int64 and int(state["step"]) == 2
    assert set(state) == {"step", "m.w", "v.w", "m.b", "v.b"}
    opt3 = AdamW(lr=1e-2)
    opt3.load_state_dict(state)
    for g in grads[2:]:
        opt3.step(p2, g)
    for k in p1:
        assert p1[k].tobytes() == p2[k].tobytes()


def test_adamw_rejects_mismatched_grads():
    params = _params()
    with pytest.raises(ValueError, match="grads is missing"):
        AdamW().step(params, {"w": params["w"]})
    with pytest.raises(ValueError, match=r"grads\['b'\]"):
        AdamW().step(params, {"w": params["w"], "b": np.zeros(4)})
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        AdamW(clip_norm=0.0)


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
    assert lr_at(500, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
    values = [lr_at(s, 1.0, 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
