"""Judge observations against YAML thresholds, and criteria against their results.

Fail closed: only GO is GO. NaN never satisfies a numeric comparison.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.errors import Diagnostic
from harness.exitcodes import ExitCode
from harness.model import (
    MAX_WAIVER_DAYS,
    Criterion,
    CriterionResult,
    Expectation,
    FailOn,
    FalsifierOutcome,
    FalsifierResult,
    InvariantOutcome,
    InvariantResult,
    Judgement,
    RunResult,
    Verdict,
    Waiver,
    WaiverResult,
    WaiverStatus,
)
from harness.plan import Observed, Task

_NUMERIC = ("le", "lt", "ge", "gt", "approx")


class _WrongType(Exception):
    """The observation is not of the type its comparator needs: ERROR, not FAIL."""


def is_number(x: Any) -> bool:
    """Python and NumPy ints and floats (NumPy registers its scalars as numbers.Real);
    booleans are not numbers."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and type(x).__name__ != "bool_"


def _has_nan(x: Any) -> bool:
    if is_number(x):
        return math.isnan(float(x))
    if isinstance(x, (list, tuple)):
        return any(_has_nan(v) for v in x)
    if isinstance(x, dict):
        return any(_has_nan(v) for v in x.values())
    return False


def _compare(op: str, observed: Any, expected: Any, comps: Mapping[str, Any]) -> str | None:
    """None when the comparison holds, else why not; raises _WrongType when the
    observation cannot be compared at all. NaN fails every comparison."""
    if op not in (*_NUMERIC, "eq", "ne", "in", "matches"):
        raise _WrongType(f"unknown comparator {op!r}")
    if _has_nan(observed):
        return "observed NaN (NaN fails every comparison)"
    if op in _NUMERIC:
        if not is_number(observed):
            raise _WrongType(f"expected a number, got {type(observed).__name__} {observed!r}")
        value = float(observed) if not isinstance(observed, int) else observed
        ok = {
            "le": lambda: value <= expected,
            "lt": lambda: value < expected,
            "ge": lambda: value >= expected,
            "gt": lambda: value > expected,
            "approx": lambda: _approx(value, expected, comps),
        }[op]()
        return None if ok else "out of bounds"
    if op == "matches":
        if not isinstance(observed, str):
            raise _WrongType(f"expected a string, got {type(observed).__name__}")
        return None if re.search(expected, observed) else "does not match"
    if op == "in":
        kinds = {_kind(e) for e in expected if e is not None}
        if kinds and observed is not None and _kind(observed) not in kinds:
            raise _WrongType(
                f"expected one of {', '.join(sorted(kinds))}, got {_kind(observed)} {observed!r}"
            )
        return None if any(_equal(observed, e) for e in expected) else "not among the allowed"
    _same_kind(observed, expected)
    same = _equal(observed, expected)
    return None if same == (op == "eq") else ("not equal" if op == "eq" else "equal")


def _kind(x: Any) -> str:
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        return "bool"
    if is_number(x):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, (list, tuple)):
        return "list"
    if isinstance(x, dict):
        return "mapping"
    if x is None:
        return "null"
    return type(x).__name__


def _same_kind(observed: Any, expected: Any) -> None:
    """eq/ne/in compare like with like: a string where a number is expected is ERROR."""
    if expected is None or observed is None:
        return
    if _kind(observed) != _kind(expected):
        raise _WrongType(f"expected a {_kind(expected)}, got {_kind(observed)} {observed!r}")


def _equal(a: Any, b: Any) -> bool:
    if _kind(a) == "bool" or _kind(b) == "bool":
        return _kind(a) == _kind(b) and bool(a) == bool(b)
    if is_number(a) and is_number(b):
        return not (_has_nan(a) or _has_nan(b)) and a == b
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
            error=True,
        )
    observed = observations[exp.observation]
    for op, value in exp.comparators.items():
        if op in ("rel", "abs"):
            continue
        try:
            why = _compare(op, observed, value, exp.comparators)
        except _WrongType as exc:
            return Judgement(exp.observation, described, observed, False, str(exc), error=True)
        if why is not None:
            return Judgement(exp.observation, described, observed, False, why)
    return Judgement(exp.observation, described, observed, True)


def judge_observations(
    expect: Iterable[Expectation], observations: Mapping[str, Any]
) -> tuple[InvariantOutcome, tuple[Judgement, ...], str]:
    """Outcome of one invariant whose check returned ``observations``: FAIL when a
    threshold is not met; else ERROR when an observation is missing or of the wrong
    type (never a pass, and never a FAIL of its own: a mutant is not "killed" by a type
    error); else PASS."""
    judgements = tuple(judge_expectation(e, observations) for e in expect)
    bad = next((j for j in judgements if not j.ok and not j.error), None)
    if bad is not None:  # a threshold really failed: FAIL, whatever else could not be judged
        why = f"observed {bad.observed!r}, expected {bad.expected} ({bad.message})"
        return InvariantOutcome.FAIL, judgements, f"{bad.observation}: {why}"
    broken = next((j for j in judgements if j.error), None)
    if broken is not None:  # nothing failed, but something could not be judged: ERROR
        return (
            InvariantOutcome.ERROR,
            judgements,
            broken.message
            if broken.message.startswith("observation ")
            else f"{broken.observation}: {broken.message}",
        )
    return InvariantOutcome.PASS, judgements, ""


# --------------------------------------------------------------------------- tasks


def _observations_of(observed: Observed) -> dict[str, Any]:
    return observed.observations if isinstance(observed.observations, dict) else {}


def _judge_call(
    task: Task, observed: Observed
) -> tuple[InvariantOutcome, tuple[Judgement, ...], str]:
    """An invariant outcome from one call of the check, as the worker reported it."""
    if observed.status == "returned":
        return judge_observations(task.invariant.expect, _observations_of(observed))
    if observed.status == "skipped":
        return InvariantOutcome.SKIP, (), observed.message
    return InvariantOutcome.ERROR, (), observed.message or "the check returned nothing"


def judge_task(
    task: Task, observed: Observed, logs: Mapping[str, str] | None = None
) -> InvariantResult | FalsifierResult:
    """The coordinator's judgement of what a worker reported for ``task``.

    This is the only place an outcome is decided: thresholds come from the YAML
    the coordinator loaded, never from the worker, and nothing a check does in its
    own process can reach it."""
    logs = dict(logs or {})
    f = task.falsifier
    if f is None:
        outcome, judgements, message = _judge_call(task, observed)
        return InvariantResult(
            task.invariant.id,
            outcome,
            _observations_of(observed) if observed.status == "returned" else {},
            judgements,
            observed.duration,
            task.seed,
            message,
            logs,
            observed.artifacts,
            observed.metrics,
        )
    outcome_f, message, detail, artifacts = {
        "mutant": _judge_mutant,
        "property": _judge_property,
        "fault": _judge_fault,
    }[f.kind](task, observed)
    return FalsifierResult(
        f.id,
        f.target,
        f.kind,
        outcome_f,
        observed.duration,
        message,
        detail,
        logs=logs,
        artifacts=artifacts,
    )


_Judged = tuple[FalsifierOutcome, str, dict[str, Any], tuple[str, ...]]


def _judgement_rows(judgements: Sequence[Judgement]) -> list[dict[str, Any]]:
    return [
        {"observation": j.observation, "expected": j.expected, "observed": j.observed, "ok": j.ok}
        for j in judgements
    ]


def _judge_mutant(task: Task, observed: Observed) -> _Judged:
    if observed.extra.get("applied") is not True:
        return FalsifierOutcome.ERROR, observed.message or "the mutant was not applied", {}, ()
    outcome, judgements, message = _judge_call(task, observed)
    detail = {
        "observations": _observations_of(observed),
        "judgements": _judgement_rows(judgements),
    }
    if outcome is InvariantOutcome.FAIL:
        return FalsifierOutcome.KILLED, message, detail, observed.artifacts
    if outcome is InvariantOutcome.PASS:
        held = observed.extra.get("unpatched_references")
        hint = ""
        if isinstance(held, list) and held and all(isinstance(h, str) for h in held):
            hint = (
                f"the patch could not reach {', '.join(h[:120] for h in held[:3])}: a name "
                "imported (from X import f) before the patch keeps the original; patch that "
                "name too, or call it through its module (X.f)"
            )
            detail["hint"] = hint
        return (
            FalsifierOutcome.MISSED,
            "the check stayed green against the mutant" + (f"; {hint}" if hint else ""),
            detail,
            observed.artifacts,
        )
    if outcome is InvariantOutcome.SKIP:
        return FalsifierOutcome.ERROR, f"the check skipped under the mutant: {message}", detail, ()
    return (
        FalsifierOutcome.CRASHED,
        f"the check errored under the mutant instead of going red (not teeth): {message}",
        detail,
        (),
    )


def _judge_fault(task: Task, observed: Observed) -> _Judged:
    extra = observed.extra
    name = str(extra.get("injector", "injector"))
    outcome, _, message = _judge_call(task, observed)
    detail = {
        "injected": extra.get("injected") is True,
        "report": extra.get("report", {}),
        "observations": _observations_of(observed),
    }
    if observed.status == "failed":
        return FalsifierOutcome.ERROR, observed.message, detail, ()
    if extra.get("injected") is not True:
        why = extra.get("failure") or "the check never called ctx.fault.inject()"
        return FalsifierOutcome.ERROR, f"injector '{name}' did not inject: {why}", detail, ()
    if outcome is InvariantOutcome.PASS:
        return FalsifierOutcome.SURVIVED, f"held under {name}", detail, observed.artifacts
    if outcome is InvariantOutcome.FAIL:
        return FalsifierOutcome.REFUTED, f"under {name}: {message}", detail, observed.artifacts
    return (
        FalsifierOutcome.ERROR,
        f"the check was {outcome.value} under the fault: {message}",
        detail,
        (),
    )


def _example_outcome(task: Task, example: Any) -> tuple[InvariantOutcome, str]:
    if not isinstance(example, dict):
        return InvariantOutcome.ERROR, "the worker sent a malformed example"
    status = example.get("status")
    observations = example.get("observations")
    if status == "returned" and isinstance(observations, dict):
        outcome, _, message = judge_observations(task.invariant.expect, observations)
        return outcome, message
    if status == "skipped":
        return InvariantOutcome.SKIP, str(example.get("message", ""))
    return InvariantOutcome.ERROR, str(example.get("message", "")) or "malformed example"


def _judge_property(task: Task, observed: Observed) -> _Judged:
    if observed.status != "returned":
        return FalsifierOutcome.ERROR, observed.message, {}, ()
    extra = observed.extra
    examples = extra.get("examples")
    if not isinstance(examples, list):
        return FalsifierOutcome.ERROR, "the worker sent no examples to judge", {}, ()
    counter = extra.get("counterexample")
    replayed = extra.get("replayed") is True
    digest = extra.get("strategy") if isinstance(extra.get("strategy"), str) else ""
    notes = _store_notes(extra, task.falsifier.id if task.falsifier else "")
    if counter is not None:
        outcome, message = _example_outcome(task, counter)
        params = counter.get("params") if isinstance(counter, dict) else None
        if outcome is not InvariantOutcome.FAIL:
            return (
                FalsifierOutcome.ERROR,
                f"the worker reported a counterexample the coordinator judges {outcome.value}",
                {"counterexample": params},
                (),
            )
        how = "replayed saved counterexample" if replayed else "counterexample"
        compact = json.dumps(params, sort_keys=True, default=repr)
        return (
            FalsifierOutcome.REFUTED,
            f"{how} {compact}: {message}{notes}",
            {"counterexample": params, "replayed": replayed, "strategy": digest},
            ("counterexample.json",),
        )
    # no counterexample claimed: every example is judged again here
    for example in examples:
        outcome, message = _example_outcome(task, example)
        if outcome is InvariantOutcome.FAIL:
            params = example.get("params")
            compact = json.dumps(params, sort_keys=True, default=repr)
            return (
                FalsifierOutcome.REFUTED,
                f"counterexample {compact} (found by re-judging the search): {message}{notes}",
                {"counterexample": params, "replayed": False, "strategy": digest},
                ("counterexample.json",),
            )
    if extra.get("search_error"):
        return (
            FalsifierOutcome.ERROR,
            f"the check errored during the search: {extra['search_error']}",
            {},
            (),
        )
    judged = [_example_outcome(task, e) for e in examples]
    errors = [m for m in judged if m[0] is InvariantOutcome.ERROR]
    if errors:
        return FalsifierOutcome.ERROR, f"an example was ERROR: {errors[0][1]}", {}, ()
    held = sum(1 for m in judged if m[0] is InvariantOutcome.PASS)
    if not held:
        return (
            FalsifierOutcome.ERROR,
            "no example held (all skipped, or none tried): the search showed nothing",
            {},
            (),
        )
    tried = extra.get("tried")
    n = tried if isinstance(tried, int) and not isinstance(tried, bool) else len(examples)
    return (
        FalsifierOutcome.SURVIVED,
        f"no counterexample in {n} examples ({held} judged to hold by the coordinator){notes}",
        {"examples": n},
        (),
    )


def _store_notes(extra: Mapping[str, Any], task_falsifier: str) -> str:
    """What the regression store said: a stale stored example that failed, or how many
    stale ones were replayed and held."""
    notes = []
    entry = extra.get("stale_entry")
    if isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
        notes.append(
            f"stored counterexample #{entry} is stale: the strategy changed since it was "
            "found; if the strategy can no longer generate it, `harness regressions clear "
            f"{task_falsifier} {entry}`"
        )
    else:
        stale = extra.get("stale")
        if isinstance(stale, int) and not isinstance(stale, bool) and stale > 0:
            notes.append(
                f"{stale} stored counterexample(s) stale (the strategy changed since they "
                "were found), replayed and held (harness regressions list)"
            )
    return "".join(f"; {n}" for n in notes)


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
    invariant id to the ids of the falsifiers declared against it. Every reason
    starts with the id of the invariant it is about (``failing_invariant`` reads it).
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
            hint = f.detail.get("hint") if isinstance(f.detail, dict) else None
            unproven.append(
                f"{f.target}: mutant {f.falsifier_id} survived" + (f" ({hint})" if hint else "")
            )
            fast_only = False
        elif f.outcome is FalsifierOutcome.CRASHED:
            unproven.append(
                f"{f.target}: mutant {f.falsifier_id} crashed the check instead of turning it "
                f"red (not teeth): {f.message}"
            )
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


# --------------------------------------------------------------------------- waivers


def today_utc() -> datetime.date:
    """Today's date in UTC: the date a run or lint judges waivers by (both take an
    explicit date instead, for tests)."""
    return datetime.datetime.now(datetime.UTC).date()


def overlong_waivers(
    criteria: Iterable[Criterion], today: datetime.date, max_days: int = MAX_WAIVER_DAYS
) -> list[Diagnostic]:
    """A waiver whose expiry date is more than ``max_days`` after ``today``: an error at
    its ``expires:`` line. A waiver lets a failing criterion pass the gate and leave the
    release verdict GO; one dated years ahead would do so for good."""
    out = []
    for c in criteria:
        if c.waiver is None:
            continue
        expires = datetime.date.fromisoformat(c.waiver.expires)
        days = (expires - today).days
        if days <= max_days:
            continue
        latest = today + datetime.timedelta(days=max_days)
        loc = c.waiver.location or c.location
        out.append(
            Diagnostic(
                loc.file,
                loc.line,
                loc.col,
                f"{c.id}'s waiver runs {days} days, to {c.waiver.expires}: a waiver may run "
                f"at most {max_days} days from today ({today.isoformat()})",
                f"{c.id}.waiver.expires",
                f"set expires on or before {latest.isoformat()} and renew it then, or raise "
                "[tool.harness] max-waiver-days",
            )
        )
    return out


def apply_waiver(
    result: CriterionResult, waiver: Waiver | None, today: datetime.date
) -> CriterionResult:
    """``result`` with its criterion's waiver applied on ``today``: ACTIVE (reported
    WAIVED, blocks nothing) when the criterion is not GO and ``today`` is before the
    waiver's expiry date; EXPIRED from that date on (the criterion is judged by its
    own verdict again); UNUSED when the criterion is GO anyway. The verdict and the
    reasons stay the criterion's own in every case."""
    if waiver is None:
        return result
    if result.verdict is Verdict.GO:
        status = WaiverStatus.UNUSED
    elif waiver.expired(today):
        status = WaiverStatus.EXPIRED
    else:
        status = WaiverStatus.ACTIVE
    applied = WaiverResult(waiver.owner, waiver.reason, waiver.link, waiver.expires, status)
    return dataclasses.replace(result, waiver=applied)


def release_verdict(results: Iterable[CriterionResult]) -> Verdict:
    """GO only if every blocker criterion is GO (warn criteria are reported only, and
    so is a criterion whose waiver holds: WAIVED blocks nothing until it expires)."""
    blockers = [r for r in results if r.severity == "blocker" and not r.waived]
    if any(r.verdict is Verdict.NO_GO for r in blockers):
        return Verdict.NO_GO
    if any(r.verdict is Verdict.UNPROVEN for r in blockers):
        return Verdict.UNPROVEN
    if any(r.verdict is Verdict.UNPROVEN_FAST for r in blockers):
        return Verdict.UNPROVEN_FAST
    return Verdict.GO


# --------------------------------------------------------------------------- the gate

# how bad a verdict is, and the least bad one each --fail-on level fails on
_BADNESS = {Verdict.GO: 0, Verdict.UNPROVEN_FAST: 1, Verdict.UNPROVEN: 2, Verdict.NO_GO: 3}
_FAILS_FROM = {FailOn.UNPROVEN_FAST: 1, FailOn.UNPROVEN: 2, FailOn.NO_GO: 3}


def blocks_gate(result: CriterionResult, fail_on: FailOn | str = FailOn.UNPROVEN) -> bool:
    """Whether this criterion fails the run (exit 1): a blocker whose verdict is
    ``fail_on`` or worse. A warn criterion never does; UNPROVEN-FAST (only the fast
    profile's skipped mutants and slow falsifiers were missing) does only under
    ``--fail-on unproven-fast``; a WAIVED criterion (its waiver holds) never does. Every
    reporter asks this, so none decides on its own."""
    return (
        result.severity == "blocker"
        and not result.waived
        and _BADNESS[result.verdict] >= _FAILS_FROM[FailOn(fail_on)]
    )


def failing_invariant(result: CriterionResult) -> str | None:
    """The invariant a criterion that is not GO is about: the one its first reason
    names (``judge_criterion`` starts every reason with the id of the invariant it
    concerns), or None when no reason names one of the criterion's invariants."""
    if not result.reasons:
        return None
    head = re.split(r"[\s:]", result.reasons[0], maxsplit=1)[0]
    ids = {r.invariant_id for r in result.invariants} | {f.target for f in result.falsifiers}
    return head if head in ids else None


def gate_passes(result: RunResult) -> bool:
    """The run passes its gate (``result.fail_on``): no criterion blocks it and the
    run was not interrupted. The same as "the release verdict is better than
    ``fail_on``", since the release verdict is the worst blocker's."""
    return not result.interrupted and not any(
        blocks_gate(c, result.fail_on) for c in result.criteria
    )


def run_exit_code(result: RunResult) -> ExitCode:
    """``harness run``'s exit code for a finished run: 0 when the gate passes, else 1."""
    return ExitCode.GO if gate_passes(result) else ExitCode.NOT_GO
