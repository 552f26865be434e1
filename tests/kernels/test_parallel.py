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
