"""Fixtures for the core's training/checkpoint tests."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import checkpoint as ck
from tests.core.helpers import full_stamps, micro_model


@pytest.fixture
def saved_gpt2(tmp_path):
    """A run dir holding one complete gpt2 checkpoint at step 5."""
    model = micro_model("gpt2")
    params = model.init_params(0)
    opt = {f"m.{k}": np.zeros_like(v) for k, v in params.items()}
    path = ck.save_checkpoint(
        tmp_path / "run", 5, params, full_stamps("gpt2", model), optimizer=opt,
        optimizer_meta={"step": "5"}, trainer={"step": 5, "cursor": {"epoch": 0, "pos": 3}},
    )  # fmt: skip
    return path, model, params
