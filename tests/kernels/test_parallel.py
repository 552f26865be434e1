"""Data-parallel loss_and_grads: same result as one call, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.config import MLPConfig, micro_config
from kernels.models.mlp import MLPClassifier
from kernels.models.registry import build_model
from kernels.parallel import DataParallel


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("rows", [2, 3, 7])
def test_data_parallel_matches_single_call(family, rows):
    model = build_model(micro_config(family))
    params = model.init_params(0)
    tokens = np.random.default_rng(rows).integers(0, 23, (rows, 9)).astype(np.int32)
    loss, grads = model.loss_and_grads(params, tokens)
    with DataParallel(model, 2) as dp:
        loss2, grads2 = dp.loss_and_grads(params, tokens)
        loss3, grads3 = dp.loss_and_grads(params, tokens)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    assert list(grads2) == list(grads)
    for name in grads:
        np.testing.assert_allclose(grads2[name], grads[name], rtol=1e-4, atol=1e-7)
        assert grads2[name].tobytes() == grads3[name].tobytes()
    assert loss2 == loss3


def test_data_parallel_mlp_and_single_row():
    mlp = MLPClassifier(MLPConfig())
    params = mlp.init_params(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 64)).astype(np.float32)
    y = rng.integers(0, 10, 10)
    loss, grads = mlp.loss_and_grads(params, x, y)
    with DataParallel(mlp, 3) as dp:
        loss2, grads2 = dp.loss_and_grads(params, x, y)
        one = dp.loss_and_grads(params, x[:1], y[:1])
    assert loss2 == pytest.approx(loss, rel=1e-6)
    for name in grads:
        np.testing.assert_allclose(grads2[name], grads[name], rtol=1e-4, atol=1e-7)
    assert one[0] == mlp.loss_and_grads(params, x[:1], y[:1])[0]
    with pytest.raises(ValueError, match="share their first axis"):
        DataParallel(mlp, 2).loss_and_grads(params, x, y[:3])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_merge_is_the_weighted_sum_in_part_order_bit_for_bit(family):
    # exactly sum_i w_i * g_i in float32, in part order, into arrays of the caller's
    # own: the next call changes none of them, and no two share memory
    model = build_model(micro_config(family))
    params = model.init_params(3)
    tokens = np.random.default_rng(5).integers(0, 23, (5, 9)).astype(np.int32)
    bounds = np.linspace(0, 5, 3).astype(np.int64)
    parts = [model.loss_and_grads(params, tokens[bounds[i] : bounds[i + 1]])[1] for i in range(2)]
    w = [np.float32((bounds[i + 1] - bounds[i]) / 5) for i in range(2)]
    with DataParallel(model, 2) as dp:
        _, grads = dp.loss_and_grads(params, tokens)
        before = {k: v.copy() for k, v in grads.items()}
        dp.loss_and_grads(params, tokens[::-1].copy())  # the next call reuses nothing of ours
    for name, g in grads.items():
        want = parts[0][name] * w[0]
        want += parts[1][name] * w[1]
        assert g.tobytes() == want.tobytes() == before[name].tobytes(), name
    arrays = list(grads.values())
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])
