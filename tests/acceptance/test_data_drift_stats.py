"""INV-DATA-012 and the tightened INV-DATA-008: drift statistics against an
independent recomputation, and the realistic mutants they must catch."""

from __future__ import annotations

import pytest

import kernels.data.drift as drift
from acceptance.data_drift_stats import drift_statistics_match_reference
from acceptance.data_pipeline import drift_quiet_on_iid
from falsifiers.mutants import data as mutants
from harness.context import CheckContext


def ctx(tmp_path, **params):
    return CheckContext(params, 7, tmp_path / "s", tmp_path / "a", "INV")


def test_every_statistic_matches_its_recomputation(tmp_path):
    obs = drift_statistics_match_reference(ctx(tmp_path))
    assert obs["slices_compared"] == 96 and obs["drifted_slices"] >= 1
    assert obs["count_mismatches"] == obs["decision_mismatches"] == 0
    assert obs["psi_max_error"] < 1e-9 and obs["ks_max_error"] < 1e-12
    assert obs["critical_max_rel_error"] < 1e-6


@pytest.mark.parametrize(
    ("name", "mutant", "observation", "bound"),
    [
        ("ks_statistic", mutants.ks_statistic_one_sided, "ks_max_error", 1e-12),
        ("bin_counts", mutants.bin_counts_left_closed, "count_mismatches", 0),
    ],
)
def test_statistic_mutants_are_caught(tmp_path, monkeypatch, name, mutant, observation, bound):
    monkeypatch.setattr(drift, name, mutant)
    assert drift_statistics_match_reference(ctx(tmp_path))[observation] > bound


def test_forgetting_bonferroni_breaks_the_ks_alarm_bound(tmp_path, monkeypatch):
    params = dict(trials=400, n_ref=1257, n_cur=270, bins=10, alpha=0.01, psi_threshold=0.1)
    assert drift_quiet_on_iid(ctx(tmp_path, **params))["ks_alarm_rate"] <= 0.01
    monkeypatch.setattr(drift.DriftDetector, "detect", mutants.detect_without_bonferroni)
    assert drift_quiet_on_iid(ctx(tmp_path, **params))["ks_alarm_rate"] > 0.02
