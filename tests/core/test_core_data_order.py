"""The data cursor, the seeded shuffle and the pre-flight gate (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.train import (
    DataCursor,
    PreflightError,
    TrainConfig,
    TrainError,
    count_windows,
    gather_windows,
    new_rng,
    next_indices,
    preflight,
    restore_rng,
    rng_state,
    shuffle_order,
)


def test_shuffle_order_is_a_seeded_permutation():
    a = shuffle_order(123, 50)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, shuffle_order(123, 50))
    assert not np.array_equal(a, shuffle_order(124, 50))


def test_stream_visits_every_index_once_per_epoch():
    rng, cursor = new_rng(0), DataCursor()
    seen = []
    for _ in range(7):
        idx, cursor = next_indices(rng, cursor, 10, 3)
        seen.extend(idx.tolist())
    assert cursor.epoch == 2
    assert sorted(seen[:10]) == list(range(10))
    assert sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != seen[10:20]  # a new order each epoch


@pytest.mark.parametrize("split_at", [0, 1, 3, 4, 6])
def test_stream_resumes_exactly_from_saved_state(split_at):
    def run(rng, cursor, n_steps):
        out = []
        for _ in range(n_steps):
            idx, cursor = next_indices(rng, cursor, 10, 3)
            out.append(idx.tolist() + [int(rng.integers(0, 8))])
        return out, rng, cursor

    full, _, _ = run(new_rng(5), DataCursor(), 8)
    head, rng, cursor = run(new_rng(5), DataCursor(), split_at)
    state, saved = rng_state(rng), cursor.to_dict()
    import json

    state = json.loads(json.dumps(state))  # as stored in trainer.json
    cursor = DataCursor.from_dict(json.loads(json.dumps(saved)))
    tail, _, _ = run(restore_rng(state), cursor, 8 - split_at)
    assert head + tail == full


def test_gather_windows_takes_shifted_windows():
    tokens = np.arange(100, dtype=np.int32)
    w = gather_windows(tokens, np.array([0, 3]), 2, 8)
    assert w.shape == (2, 9) and w.dtype == np.int32
    assert w[0].tolist() == list(range(2, 11))
    assert w[1].tolist() == list(range(26, 35))
    n = count_windows(len(tokens), 8)
    last = gather_windows(tokens, np.array([n - 1]), 7, 8)  # largest phase still fits
    assert last[0, -1] < len(tokens)


def test_preflight_refuses_ship_below_20_tokens_per_param():
    cfg = TrainConfig(purpose="ship", steps=10, batch_size=4, grad_accum=1)
    with pytest.raises(PreflightError, match=r"20 training tokens per parameter.*0\.\d+"):
        preflight(cfg, n_params=10_000, n_ctx=16)
    label, ratio = preflight(TrainConfig(purpose="ablation", steps=10, batch_size=4), 10_000, 16)
    assert label.startswith("ablation") and ratio == pytest.approx(0.064)
    label, ratio = preflight(TrainConfig(purpose="ship", steps=400, batch_size=4), 1000, 16)
    assert label == "ship" and ratio >= 20


def test_train_config_round_trip_and_errors():
    cfg = TrainConfig(family="llama", model={"n_layer": 1}, seed=3, grad_accum=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TrainError, match="purpose must be one of ship, ablation"):
        TrainConfig(purpose="prod")
    with pytest.raises(TrainError, match="unknown TrainConfig fields: bogus"):
        TrainConfig.from_dict({"bogus": 1})
