"""INV-TRAIN-009: the data stream over several epochs, and the stream bugs it catches."""

from __future__ import annotations

import pytest

import kernels.train as train_pkg
from acceptance.training_stream import stream_over_epochs
from falsifiers.mutants import training as mutants
from harness.context import CheckContext

PARAMS = {
    "families": ["gpt2", "mlp"],
    "models": {"gpt2": {"n_layer": 1, "d_model": 8, "n_head": 2, "n_ctx": 16}},
    "batch": 64,
    "epochs": 3,
}


def _run(tmp_path):
    return stream_over_epochs(CheckContext(dict(PARAMS), 11, tmp_path / "s", tmp_path / "a", "X"))


def test_every_epoch_is_a_fresh_permutation_and_resumes_identically(tmp_path):
    obs = _run(tmp_path)
    assert obs["epochs_seen"] >= 6 and obs["epochs_complete"] == obs["epochs_seen"]
    assert obs["repeated_orders"] == obs["resume_mismatches"] == 0
    assert obs["resumes_tested"] == 4


@pytest.mark.parametrize(
    ("mutant", "observation"),
    [
        (mutants.next_indices_dropping_epoch_tail, "epochs_with_gaps_or_repeats"),
        (mutants.next_indices_one_order, "repeated_orders"),
    ],
)
def test_stream_bugs_are_caught(tmp_path, monkeypatch, mutant, observation):
    monkeypatch.setattr(train_pkg, "next_indices", mutant)
    assert _run(tmp_path)[observation] > 0
