from __future__ import annotations

import math

import pytest

from harness.judge import judge_criterion, judge_expectation, judge_observations, release_verdict
from harness.model import (
    Expectation,
    FalsifierOutcome,
    FalsifierResult,
    InvariantOutcome,
    InvariantResult,
    Location,
    Verdict,
)


def ok(comparators, observed):
    return judge_expectation(Expectation("x", comparators), {"x": observed}).ok


@pytest.mark.parametrize(
    "comparators,observed,expected",
    [
        ({"eq": 1}, 1, True),
        ({"eq": 1}, 2, False),
        ({"eq": True}, True, True),
        ({"eq": True}, 1, False),
        ({"eq": 1}, True, False),
        ({"eq": "a"}, "a", True),
        ({"eq": [1, 2]}, [1, 2], True),
        ({"eq": [1, 2]}, [2, 1], False),
        ({"ne": 0}, 1, True),
        ({"ne": 0}, 0, False),
        ({"le": 1}, 1, True),
        ({"le": 1}, 1.0001, False),
        ({"lt": 1}, 0.999, True),
        ({"lt": 1}, 1, False),
        ({"ge": 1}, 1, True),
        ({"ge": 1}, 0, False),
        ({"gt": 1}, 2, True),
        ({"gt": 1}, 1, False),
        ({"ge": 0, "le": 1}, 0.5, True),
        ({"ge": 0, "le": 1}, 1.5, False),
        ({"approx": 1.0}, 1.0 + 1e-9, True),
        ({"approx": 1.0}, 1.1, False),
        ({"approx": 1.0, "rel": 0.2}, 1.1, True),
        ({"approx": 0.0, "abs": 1e-3}, 5e-4, True),
        ({"approx": 0.0, "abs": 1e-3}, 2e-3, False),
        ({"in": ["a", "b"]}, "b", True),
        ({"in": ["a", "b"]}, "c", False),
        ({"matches": "^v[0-9]+$"}, "v12", True),
        ({"matches": "^v[0-9]+$"}, "x", False),
        ({"matches": "x"}, 3, False),
        ({"le": 1}, "1", False),
        ({"le": 1}, None, False),
        ({"le": 1}, True, False),
    ],
)
def test_comparators(comparators, observed, expected):
    assert ok(comparators, observed) is expected


@pytest.mark.parametrize("op", ["le", "lt", "ge", "gt", "approx", "eq", "ne"])
def test_nan_never_satisfies(op):
    assert not ok({op: 1.0}, math.nan)
    assert not ok({op: math.nan}, math.nan)


def test_nan_fails_ne_and_in_too():
    """Finding 11: a check returning NaN under `ne: 0` was PASS."""
    assert not ok({"ne": 0}, math.nan)
    assert not ok({"in": [0, 1]}, math.nan)
    assert not ok({"ne": [0.0, 1.0]}, [math.nan, 1.0])


def test_numpy_scalars_are_numbers():
    """Finding 11: np.float32(0.0) was judged FAIL ("expected a number, got float32")."""
    np = pytest.importorskip("numpy")
    for value in (np.float32(0.0), np.float64(0.0), np.int64(0), np.int8(0)):
        assert ok({"le": 0.5}, value)
        assert ok({"eq": 0}, value)
        assert ok({"approx": 0.0, "abs": 1e-9}, value)
    assert not ok({"ne": 0}, np.float32("nan"))
    assert ok({"eq": True}, np.bool_(True))


@pytest.mark.parametrize(
    ("comparators", "observed"),
    [
        ({"le": 1}, "0"),
        ({"eq": 1}, "1"),
        ({"eq": True}, 1),
        ({"ne": 1}, [1]),
        ({"matches": "x"}, 3),
        ({"in": [1, 2]}, "1"),
    ],
)
def test_wrong_type_is_error_not_fail(comparators, observed):
    """Finding 11: a type mismatch was FAIL, so a mutant could be "killed" by a type error."""
    outcome, judgements, message = judge_observations(
        [Expectation("x", comparators)], {"x": observed}
    )
    assert outcome is InvariantOutcome.ERROR, message
    assert judgements[0].error


def test_infinities():
    assert ok({"ge": 1e308}, math.inf)
    assert not ok({"le": 1e308}, math.inf)
    assert ok({"approx": math.inf}, math.inf)
    assert not ok({"approx": 1.0}, math.inf)
    assert not ok({"approx": math.inf}, 1e308)
    assert ok({"lt": 0}, -math.inf)


def test_missing_observation_is_error_not_fail():
    outcome, _, message = judge_observations([Expectation("y", {"eq": 1})], {"x": 1})
    assert outcome is InvariantOutcome.ERROR
    assert "'y' missing" in message and "x" in message


def test_failure_message_names_observed_and_expected():
    outcome, _, message = judge_observations([Expectation("loss", {"le": 2.0})], {"loss": 3.5})
    assert outcome is InvariantOutcome.FAIL
    assert "observed 3.5" in message and "<= 2.0" in message


def _inv(outcome, iid="INV-A-001"):
    return InvariantResult(iid, outcome, {}, (), 0.0, 0)


def _fal(outcome, kind="mutant", fid="FALSIFY-A-001", target="INV-A-001"):
    return FalsifierResult(fid, target, kind, outcome, 0.0)


LOC = Location("x.yaml", 1, 1)
TARGETS = {"INV-A-001": ["FALSIFY-A-001"]}


def verdict(invs, fals, targets=TARGETS):
    return judge_criterion("AC-A-001", "t", "blocker", LOC, invs, fals, targets).verdict


def test_go_needs_pass_and_killed_mutant():
    assert verdict([_inv(InvariantOutcome.PASS)], [_fal(FalsifierOutcome.KILLED)]) is Verdict.GO


def test_fail_is_no_go():
    assert verdict([_inv(InvariantOutcome.FAIL)], [_fal(FalsifierOutcome.KILLED)]) is Verdict.NO_GO


def test_error_is_no_go():
    assert verdict([_inv(InvariantOutcome.ERROR)], [_fal(FalsifierOutcome.KILLED)]) is Verdict.NO_GO


def test_skip_is_never_go():
    assert (
        verdict([_inv(InvariantOutcome.SKIP)], [_fal(FalsifierOutcome.KILLED)]) is Verdict.UNPROVEN
    )


def test_missed_mutant_is_unproven_with_reason():
    r = judge_criterion(
        "AC-A-001",
        "t",
        "blocker",
        LOC,
        [_inv(InvariantOutcome.PASS)],
        [_fal(FalsifierOutcome.MISSED)],
        TARGETS,
    )
    assert r.verdict is Verdict.UNPROVEN
    assert any("mutant FALSIFY-A-001 survived" in x for x in r.reasons)


def test_no_falsifier_is_unproven_with_reason():
    r = judge_criterion("AC-A-001", "t", "blocker", LOC, [_inv(InvariantOutcome.PASS)], [], {})
    assert r.verdict is Verdict.UNPROVEN
    assert "INV-A-001: no falsifier" in r.reasons


def test_refuted_attack_is_no_go():
    targets = {"INV-A-001": ["FALSIFY-A-001", "FALSIFY-A-002"]}
    fals = [
        _fal(FalsifierOutcome.KILLED),
        _fal(FalsifierOutcome.REFUTED, "property", "FALSIFY-A-002"),
    ]
    assert verdict([_inv(InvariantOutcome.PASS)], fals, targets) is Verdict.NO_GO


def test_surviving_attack_without_mutant_is_unproven():
    fals = [_fal(FalsifierOutcome.SURVIVED, "property")]
    assert verdict([_inv(InvariantOutcome.PASS)], fals) is Verdict.UNPROVEN


def test_falsifier_error_is_never_go():
    assert (
        verdict([_inv(InvariantOutcome.PASS)], [_fal(FalsifierOutcome.ERROR)]) is Verdict.UNPROVEN
    )


def test_fast_profile_gives_unproven_fast():
    fals = [_fal(FalsifierOutcome.NOT_RUN)]
    assert verdict([_inv(InvariantOutcome.PASS)], fals) is Verdict.UNPROVEN_FAST


def test_release_verdict_ignores_warn_criteria():
    go = judge_criterion(
        "AC-A-001",
        "t",
        "blocker",
        LOC,
        [_inv(InvariantOutcome.PASS)],
        [_fal(FalsifierOutcome.KILLED)],
        TARGETS,
    )
    bad = judge_criterion("AC-B-001", "t", "warn", LOC, [_inv(InvariantOutcome.FAIL)], [], {})
    assert release_verdict([go, bad]) is Verdict.GO
    bad_blocker = judge_criterion(
        "AC-B-001", "t", "blocker", LOC, [_inv(InvariantOutcome.FAIL)], [], {}
    )
    assert release_verdict([go, bad_blocker]) is Verdict.NO_GO


def test_a_real_failure_beside_a_wrong_type_is_fail():
    """A threshold that really failed decides: FAIL (a check whose run was refused may
    report null for what it could not measure). Only a type error alone is ERROR."""
    outcome, _, message = judge_observations(
        [Expectation("trained", {"eq": True}), Expectation("ratio", {"ge": 20})],
        {"trained": False, "ratio": None},
    )
    assert outcome is InvariantOutcome.FAIL and message.startswith("trained:")
    outcome, _, _ = judge_observations(
        [Expectation("trained", {"eq": True}), Expectation("ratio", {"ge": 20})],
        {"trained": True, "ratio": None},
    )
    assert outcome is InvariantOutcome.ERROR
