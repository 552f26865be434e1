"""INV-DATA-011: the n-gram kernel against its reference, and the mutants it must catch."""

from __future__ import annotations

import pytest

import kernels.data.pipeline as pipeline
from acceptance.data_ngrams import ngram_kernel_matches_reference
from falsifiers.mutants import data_ngrams as mutants
from harness.context import CheckContext


def _run(tmp_path):
    ctx = CheckContext({"n": 13, "ns": [1, 2, 3]}, 1, tmp_path / "s", tmp_path / "a", "INV")
    return ngram_kernel_matches_reference(ctx)


def test_the_shipped_kernel_matches_its_reference(tmp_path):
    obs = _run(tmp_path)
    assert obs["documents"] >= 600 and obs["boundary_cases"] >= 100
    assert obs["mismatched_documents"] == obs["boundary_mismatches"] == obs["plants_kept"] == 0


@pytest.mark.parametrize(
    "mutant", ["kernel_drops_last_word", "kernel_spaces_only", "kernel_crosses_documents"]
)
def test_every_kernel_mutant_is_caught(tmp_path, monkeypatch, mutant):
    monkeypatch.setattr(pipeline, "_kernel", getattr(mutants, mutant))
    obs = _run(tmp_path)
    assert obs["mismatched_documents"] + obs["boundary_mismatches"] + obs["plants_kept"] > 0
