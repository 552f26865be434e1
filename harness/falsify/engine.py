"""Run one falsifier against its invariant, inside a worker process.

- mutant: patch dotted names (or override params) in this worker only, run the
  invariant's check; FAIL is KILLED, PASS is MISSED. A crash or skip under the
  mutant is ERROR: a crash is not a kill.
- property: a Hypothesis search over the check's params; a failing example is
  shrunk, saved into the evidence and the regression store, and the invariant
  is REFUTED. Saved counterexamples are replayed first.
- fault: an injector (``harness.falsify.faults`` or a ``module:Class`` of the
  project's own) is handed to the check as
  ``ctx.fault``; the invariant must still hold (SURVIVED) or it is REFUTED. An
  injector that did not inject is ERROR, never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.bindings import BindingError, import_dotted
from harness.errors import HarnessError
from harness.evaluate import evaluate, make_context
from harness.falsify.faults import InjectionFailed, make_injector
from harness.falsify.patching import apply_patch
from harness.model import FalsifierOutcome, FalsifierResult, InvariantOutcome
from harness.plan import Task


def run_falsifier(task: Task) -> FalsifierResult:
    f = task.falsifier
    assert f is not None
    runner = {"mutant": run_mutant, "property": run_property, "fault": run_fault}[f.kind]
    return runner(task)


def _result(
    task: Task,
    outcome: FalsifierOutcome,
    message: str = "",
    detail: dict[str, Any] | None = None,
    artifacts: tuple[str, ...] = (),
) -> FalsifierResult:
    f = task.falsifier
    assert f is not None
    return FalsifierResult(
        f.id, f.target, f.kind, outcome, 0.0, message, detail or {}, artifacts=artifacts
    )


# --------------------------------------------------------------------------- mutant


def run_mutant(task: Task) -> FalsifierResult:
    f = task.falsifier
    assert f is not None
    spec = f.spec
    try:
        for target, replacement in spec.get("patch", {}).items():
            apply_patch(target, replacement)
    except BindingError as exc:
        return _result(task, FalsifierOutcome.ERROR, f"mutant cannot be applied: {exc}")
    ctx = make_context(task, spec.get("params"))
    outcome, judgements, message, observations = evaluate(task, ctx)
    detail = {
        "observations": observations,
        "judgements": [
            {
                "observation": j.observation,
                "expected": j.expected,
                "observed": j.observed,
                "ok": j.ok,
            }
            for j in judgements
        ],
    }
    if outcome is InvariantOutcome.FAIL:
        return _result(task, FalsifierOutcome.KILLED, message, detail, tuple(ctx.artifacts))
    if outcome is InvariantOutcome.PASS:
        return _result(
            task,
            FalsifierOutcome.MISSED,
            "the check stayed green against the mutant",
            detail,
            tuple(ctx.artifacts),
        )
    return _result(
        task,
        FalsifierOutcome.ERROR,
        f"the check was {outcome.value} under the mutant, not red: {message}",
        detail,
    )


# --------------------------------------------------------------------------- property


class _Counterexample(HarnessError, AssertionError):
    """The check went red on a generated example: the search stops and shrinks."""


def run_property(task: Task) -> FalsifierResult:
    import hypothesis
    from hypothesis import strategies as st
    from hypothesis.database import DirectoryBasedExampleDatabase

    f = task.falsifier
    assert f is not None
    spec = f.spec
    try:
        factory = import_dotted(spec["strategy"])
        strategy = factory() if callable(factory) else factory
    except Exception as exc:
        return _result(task, FalsifierOutcome.ERROR, f"strategy {spec['strategy']} failed: {exc}")
    if not isinstance(strategy, st.SearchStrategy):
        return _result(
            task,
            FalsifierOutcome.ERROR,
            f"strategy {spec['strategy']} returned {type(strategy).__name__}, "
            "not a Hypothesis strategy",
        )
    store = Path(task.options.get("regressions_dir", Path(task.check_dir) / "regressions"))
    replay_file = store / f"{f.id}.json"
    counter = {"n": 0}
    failing: dict[str, Any] = {}

    def attempt(params: dict[str, Any]) -> tuple[InvariantOutcome, str]:
        counter["n"] += 1
        ctx = make_context(task, params, scratch_name=f"scratch/{counter['n']}")
        outcome, _, message, _ = evaluate(task, ctx)
        return outcome, message

    # 1. replay saved counterexamples first
    if replay_file.exists():
        for params in json.loads(replay_file.read_text()):
            outcome, message = attempt(params)
            if outcome is InvariantOutcome.FAIL:
                return _refuted(task, params, message, replay_file, replayed=True)

    # 2. search
    db = DirectoryBasedExampleDatabase(
        str(task.options.get("hypothesis_db", Path(task.check_dir) / "hypothesis-db"))
    )
    deadline = spec.get("deadline_ms")
    settings = hypothesis.settings(
        max_examples=int(spec.get("max_examples", 50)),
        database=db,
        deadline=None if deadline is None else deadline,
        suppress_health_check=list(hypothesis.HealthCheck),
        print_blob=False,
    )
    errors: list[str] = []

    @hypothesis.seed(task.seed)
    @settings
    @hypothesis.given(strategy)
    def search(params: dict[str, Any]) -> None:
        outcome, message = attempt(params)
        if outcome is InvariantOutcome.FAIL:
            failing.clear()
            failing.update(params=params, message=message)
            raise _Counterexample(message)
        if outcome is InvariantOutcome.ERROR:
            errors.append(f"{message} (params {params!r})")
            raise RuntimeError(message)

    try:
        search()
    except _Counterexample:
        return _refuted(task, failing["params"], failing["message"], replay_file)
    except Exception as exc:
        if errors:
            return _result(
                task, FalsifierOutcome.ERROR, f"the check errored during the search: {errors[-1]}"
            )
        return _result(
            task, FalsifierOutcome.ERROR, f"property search failed: {type(exc).__name__}: {exc}"
        )
    return _result(
        task,
        FalsifierOutcome.SURVIVED,
        f"no counterexample in {counter['n']} examples",
        {"examples": counter["n"]},
    )


def _refuted(
    task: Task, params: dict[str, Any], message: str, replay_file: Path, replayed: bool = False
) -> FalsifierResult:
    art_dir = Path(task.check_dir) / "artifacts"
    art_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(params, indent=2, sort_keys=True, default=repr)
    (art_dir / "counterexample.json").write_text(text)
    replay_file.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(replay_file.read_text()) if replay_file.exists() else []
    if params not in saved:
        saved.append(json.loads(text))
        replay_file.write_text(json.dumps(saved, indent=2, sort_keys=True))
    how = "replayed saved counterexample" if replayed else "counterexample"
    compact = json.dumps(params, sort_keys=True, default=repr)
    return _result(
        task,
        FalsifierOutcome.REFUTED,
        f"{how} {compact}: {message}",
        {"counterexample": json.loads(text), "replayed": replayed},
        ("counterexample.json",),
    )


# --------------------------------------------------------------------------- fault


def run_fault(task: Task) -> FalsifierResult:
    f = task.falsifier
    assert f is not None
    try:
        injector = make_injector(f.spec["injector"], dict(f.spec.get("params", {})), task.seed)
    except (KeyError, BindingError, ValueError) as exc:
        return _result(task, FalsifierOutcome.ERROR, f"no such injector: {exc}")
    ctx = make_context(task, fault=injector)
    try:
        outcome, _, message, observations = evaluate(task, ctx)
    except InjectionFailed as exc:
        return _result(task, FalsifierOutcome.ERROR, f"injector could not inject: {exc}")
    detail = {
        "injected": injector.injected,
        "report": injector.report,
        "observations": observations,
    }
    if not injector.injected:
        why = injector.failure or "the check never called ctx.fault.inject()"
        return _result(
            task,
            FalsifierOutcome.ERROR,
            f"injector '{injector.name}' did not inject: {why}",
            detail,
        )
    if outcome is InvariantOutcome.PASS:
        return _result(
            task,
            FalsifierOutcome.SURVIVED,
            f"held under {injector.name}",
            detail,
            tuple(ctx.artifacts),
        )
    if outcome is InvariantOutcome.FAIL:
        return _result(
            task,
            FalsifierOutcome.REFUTED,
            f"under {injector.name}: {message}",
            detail,
            tuple(ctx.artifacts),
        )
    return _result(
        task,
        FalsifierOutcome.ERROR,
        f"the check was {outcome.value} under the fault: {message}",
        detail,
    )
