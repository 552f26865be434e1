"""Judge observations against YAML thresholds, and criteria against their results.

Fail closed: only GO is GO. NaN never satisfies a numeric comparison.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.model import (
    CriterionResult,
    Expectation,
    FalsifierOutcome,
    FalsifierResult,
    InvariantOutcome,
    InvariantResult,
    Judgement,
    Verdict,
)

_NUMERIC = ("le", "lt", "ge", "gt", "approx")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _compare(op: str, observed: Any, expected: Any, comps: Mapping[str, Any]) -> str | None:
    """None when the comparison holds, else why not."""
    if op in _NUMERIC:
        if not _is_number(observed):
            return f"expected a number, got {type(observed).__name__} {observed!r}"
        if math.isnan(observed):
            return "observed NaN"
        ok = {
            "le": lambda: observed <= expected,
            "lt": lambda: observed < expected,
            "ge": lambda: observed >= expected,
            "gt": lambda: observed > expected,
            "approx": lambda: _approx(observed, expected, comps),
        }[op]()
        return None if ok else "out of bounds"
    if op in ("eq", "ne"):
        same = _equal(observed, expected)
        return None if same == (op == "eq") else ("not equal" if op == "eq" else "equal")
    if op == "in":
        return None if any(_equal(observed, e) for e in expected) else "not among the allowed"
    if op == "matches":
        if not isinstance(observed, str):
            return f"expected a string, got {type(observed).__name__}"
        return None if re.search(expected, observed) else "does not match"
    return f"unknown comparator {op!r}"


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return not (math.isnan(a) or math.isnan(b)) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _approx(observed: float, expected: float, comps: Mapping[str, Any]) -> bool:
    if math.isinf(observed) or math.isinf(expected):
        return observed == expected
    rel = float(comps.get("rel", 0.0 if "abs" in comps else 1e-6))
    abs_ = float(comps.get("abs", 0.0))
    return abs(observed - expected) <= max(rel * abs(expected), abs_)


def judge_expectation(exp: Expectation, observations: Mapping[str, Any]) -> Judgement:
    described = exp.describe()
    if exp.observation not in observations:
        have = ", ".join(sorted(observations)) or "none"
        return Judgement(
            exp.observation,
            described,
            None,
            False,
            f"observation '{exp.observation}' missing (the check returned: {have})",
        )
    observed = observations[exp.observation]
    for op, value in exp.comparators.items():
        if op in ("rel", "abs"):
            continue
        why = _compare(op, observed, value, exp.comparators)
        if why is not None:
            return Judgement(exp.observation, described, observed, False, why)
    return Judgement(exp.observation, described, observed, True)


def judge_observations(
    expect: Iterable[Expectation], observations: Mapping[str, Any]
) -> tuple[InvariantOutcome, tuple[Judgement, ...], str]:
    """Outcome of one invariant whose check returned ``observations``."""
    judgements = tuple(judge_expectation(e, observations) for e in expect)
    missing = [
        j
        for j in judgements
        if j.observed is None and not j.ok and j.message.startswith("observation ")
    ]
    if missing:
        return InvariantOutcome.ERROR, judgements, missing[0].message
    bad = next((j for j in judgements if not j.ok), None)
    if bad is None:
        return InvariantOutcome.PASS, judgements, ""
    return (
        InvariantOutcome.FAIL,
        judgements,
        f"{bad.observation}: observed {bad.observed!r}, expected {bad.expected} ({bad.message})",
    )


# --------------------------------------------------------------------------- criteria

_ATTACK_KINDS = ("property", "fault")


def judge_criterion(
    criterion_id: str,
    title: str,
    severity: str,
    location: Any,
    invariants: Sequence[InvariantResult],
    falsifiers: Sequence[FalsifierResult],
    falsifier_targets: Mapping[str, Sequence[str]],
    duration: float = 0.0,
) -> CriterionResult:
    """Apply the verdict rules of DESIGN.md.

    GO only when every invariant passed, every attack survived, and every
    invariant has at least one killed mutant. ``falsifier_targets`` maps each
    invariant id to the ids of the falsifiers declared against it.
    """
    no_go: list[str] = []
    unproven: list[str] = []
    fast_only = True
    for r in invariants:
        if r.outcome is InvariantOutcome.FAIL:
            no_go.append(f"{r.invariant_id} FAIL: {r.message}")
        elif r.outcome is InvariantOutcome.ERROR:
            no_go.append(f"{r.invariant_id} ERROR: {r.message}")
        elif r.outcome is InvariantOutcome.SKIP:
            unproven.append(f"{r.invariant_id} SKIP: {r.message}")
            fast_only = False
    by_target: dict[str, list[FalsifierResult]] = {}
    for f in falsifiers:
        by_target.setdefault(f.target, []).append(f)
        if f.outcome is FalsifierOutcome.REFUTED:
            no_go.append(f"{f.target} REFUTED by {f.falsifier_id}: {f.message}")
        elif f.outcome is FalsifierOutcome.MISSED:
            unproven.append(f"{f.target}: mutant {f.falsifier_id} survived")
            fast_only = False
        elif f.outcome is FalsifierOutcome.ERROR:
            unproven.append(f"{f.target}: falsifier {f.falsifier_id} ERROR: {f.message}")
            fast_only = False
        elif f.outcome is FalsifierOutcome.NOT_RUN:
            unproven.append(f"{f.target}: {f.falsifier_id} not run ({f.message})")
    for r in invariants:
        declared = falsifier_targets.get(r.invariant_id, ())
        if not declared:
            unproven.append(f"{r.invariant_id}: no falsifier")
            fast_only = False
            continue
        results = by_target.get(r.invariant_id, [])
        if not any(f.outcome is FalsifierOutcome.KILLED for f in results):
            if any(f.kind == "mutant" and f.outcome is FalsifierOutcome.NOT_RUN for f in results):
                continue  # reported above as not run
            unproven.append(f"{r.invariant_id}: no killed mutant or refuting fixture")
            fast_only = False
    if no_go:
        verdict, reasons = Verdict.NO_GO, no_go + unproven
    elif unproven:
        verdict = Verdict.UNPROVEN_FAST if fast_only else Verdict.UNPROVEN
        reasons = unproven
    else:
        verdict, reasons = Verdict.GO, []
    return CriterionResult(
        criterion_id,
        title,
        severity,
        verdict,
        tuple(reasons),
        tuple(invariants),
        tuple(falsifiers),
        location,
        duration,
    )


def release_verdict(results: Iterable[CriterionResult]) -> Verdict:
    """GO only if every blocker criterion is GO (warn criteria are reported only)."""
    blockers = [r for r in results if r.severity == "blocker"]
    if any(r.verdict is Verdict.NO_GO for r in blockers):
        return Verdict.NO_GO
    if any(r.verdict is Verdict.UNPROVEN for r in blockers):
        return Verdict.UNPROVEN
    if any(r.verdict is Verdict.UNPROVEN_FAST for r in blockers):
        return Verdict.UNPROVEN_FAST
    return Verdict.GO
