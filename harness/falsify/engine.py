"""Run one falsifier against its invariant, inside a worker process.

Nothing here decides an outcome: each function returns the ``Observed`` record
of what happened, and the coordinator judges it (``harness.judge.judge_task``).

- mutant: patch dotted names (or override params) in this worker only (every
  task has a fresh process), run the invariant's check. The coordinator calls
  FAIL KILLED, PASS MISSED and an error CRASHED (not teeth).
- property: a Hypothesis search over the check's params. The search is guided
  by a local judgement (to know what to shrink), and every example it tried is
  sent back, so the coordinator re-judges them all: a subverted local judge can
  hide nothing. Saved counterexamples are replayed first. The coordinator, not
  the worker, saves a counterexample into the evidence and the regression store.
- fault: an injector (``harness.falsify.faults`` or a ``module:Class`` of the
  project's own) is handed to the check as ``ctx.fault``; the worker reports
  whether it injected and what the check observed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from harness.bindings import BindingError, resolve_allowed, resolve_patch_target
from harness.errors import HarnessError
from harness.evaluate import make_context, observe
from harness.falsify.faults import make_injector
from harness.falsify.patching import apply_patch
from harness.judge import judge_observations
from harness.model import InvariantOutcome
from harness.plan import Observed, Task, to_plain
from harness.regressions import Entry, StoreProblem, strategy_digest
from harness.regressions import load as load_regressions

MAX_EXAMPLES_SENT = 2000  # examples of one search sent back for re-judging


def run_falsifier(task: Task) -> Observed:
    f = task.falsifier
    assert f is not None
    runner = {"mutant": run_mutant, "property": run_property, "fault": run_fault}[f.kind]
    return runner(task)


# --------------------------------------------------------------------------- mutant


def run_mutant(task: Task) -> Observed:
    f = task.falsifier
    assert f is not None
    spec = f.spec
    originals: dict[str, Any] = {}
    try:
        for target, replacement in spec.get("patch", {}).items():
            owner, name = resolve_patch_target(target, task.allowed, "mutant target")
            originals[target] = getattr(owner, name, None)
            apply_patch(target, replacement, task.allowed)
    except BindingError as exc:
        return Observed("failed", f"mutant cannot be applied: {exc}", extra={"applied": False})
    observed = observe(task, make_context(task, spec.get("params")))
    extra: dict[str, Any] = {"applied": True}
    held = unpatched_references(originals, task.root)
    if held:
        extra["unpatched_references"] = held
    return dataclasses.replace(observed, extra=extra)


def unpatched_references(originals: dict[str, Any], root: str, limit: int = 10) -> list[str]:
    """Names in the project's loaded modules still bound to a patched object: a
    ``from mylib import clip`` made before the patch keeps the original, so a check
    calling ``clip`` never meets the mutant. Reported with a MISSED mutant as a hint."""
    import sys

    wanted = {id(v): t for t, v in originals.items() if callable(v)}
    found: list[str] = []
    base = str(Path(root).resolve())
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None) or ""
        if not path.startswith(base + "/") or "site-packages" in path:
            continue
        for key, value in list(vars(mod).items()):
            target = wanted.get(id(value))
            if target is not None and f"{mod.__name__}:{key}" != target:
                found.append(f"{mod.__name__}.{key} (still {target})")
                if len(found) >= limit:
                    return found
    return found


# --------------------------------------------------------------------------- property


class _Counterexample(HarnessError, AssertionError):
    """The check went red on a generated example: the search stops and shrinks."""


def _example(params: Any, observed: Observed) -> dict[str, Any]:
    return {
        "params": params,
        "status": observed.status,
        "message": observed.message,
        "observations": observed.observations,
    }


def run_property(task: Task) -> Observed:
    import hypothesis
    from hypothesis import strategies as st
    from hypothesis.database import DirectoryBasedExampleDatabase

    f = task.falsifier
    assert f is not None
    spec = f.spec
    try:
        factory = resolve_allowed(spec["strategy"], task.allowed, "property strategy")
        strategy = factory() if callable(factory) else factory
    except Exception as exc:
        return Observed("failed", f"strategy {spec['strategy']} failed: {exc}")
    if not isinstance(strategy, st.SearchStrategy):
        return Observed(
            "failed",
            f"strategy {spec['strategy']} returned {type(strategy).__name__}, "
            "not a Hypothesis strategy",
        )
    digest = strategy_digest(spec, factory)
    examples: list[dict[str, Any]] = []
    counter = {"n": 0}
    found: dict[str, Any] = {}

    def attempt(params: dict[str, Any]) -> tuple[InvariantOutcome, dict[str, Any]]:
        counter["n"] += 1
        ctx = make_context(task, params, scratch_name=f"scratch/{counter['n']}")
        observed = observe(task, ctx)
        try:
            plain = to_plain(params, "params")
        except TypeError:
            plain = json.loads(json.dumps(params, default=repr))
        example = _example(plain, observed)
        if len(examples) < MAX_EXAMPLES_SENT:
            examples.append(example)
        why = observed.message
        if observed.status == "returned":
            outcome, _, why = judge_observations(task.invariant.expect, observed.observations)
        else:
            outcome = (
                InvariantOutcome.SKIP if observed.status == "skipped" else InvariantOutcome.ERROR
            )
        return outcome, {**example, "why": why}

    def finish(**extra: Any) -> Observed:
        return Observed(
            "returned",
            extra.pop("message", ""),
            extra={"examples": examples, "tried": counter["n"], "strategy": digest,
                   **store_notes, **extra},
        )  # fmt: skip

    # 1. replay saved counterexamples first
    # (the stale ones too: a known bug is never skipped; a failure says it is stale)
    store_notes: dict[str, Any] = {}
    saved: list[Entry] = []
    if task.options.get("regressions_dir"):
        try:
            saved = load_regressions(Path(task.options["regressions_dir"]), f.id)
        except StoreProblem as exc:  # never read as empty: the search is not run either
            return Observed("failed", f"regression store unreadable: {exc}")
    stale = [e for e in saved if e.stale(digest)]
    if stale:
        store_notes["stale"] = len(stale)
    for n, entry in enumerate(saved, 1):
        outcome, example = attempt(entry.params)
        if outcome is InvariantOutcome.FAIL:
            return finish(
                counterexample=example, replayed=True, stale_entry=n if entry in stale else 0
            )

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

    @hypothesis.seed(task.seed)
    @settings
    @hypothesis.given(strategy)
    def search(params: dict[str, Any]) -> None:
        outcome, example = attempt(params)
        if outcome is InvariantOutcome.FAIL:
            found["example"] = example
            raise _Counterexample(example["why"])
        if outcome is InvariantOutcome.ERROR:
            found["error"] = f"{example['why']} (params {params!r})"
            raise RuntimeError(example["why"])

    try:
        search()
    except _Counterexample:
        # the last failing example Hypothesis tried is the shrunk one
        return finish(counterexample=found["example"], replayed=False)
    except Exception as exc:
        why = found.get("error") or f"property search failed: {type(exc).__name__}: {exc}"
        return finish(search_error=why)
    return finish()


# --------------------------------------------------------------------------- fault


def run_fault(task: Task) -> Observed:
    f = task.falsifier
    assert f is not None
    try:
        injector = make_injector(
            f.spec["injector"], dict(f.spec.get("params", {})), task.seed, task.allowed
        )
    except (KeyError, BindingError, ValueError) as exc:
        return Observed("failed", f"no such injector: {exc}", extra={"injected": False})
    observed = observe(task, make_context(task, fault=injector))
    raw = getattr(injector, "report", None) or {}  # an __init__ that skipped super()'s
    try:
        report = to_plain(raw, "report")
    except TypeError:
        report = json.loads(json.dumps(raw, default=str))
    return dataclasses.replace(
        observed,
        extra={
            "injector": injector.name,
            "injected": bool(getattr(injector, "injected", False)),
            "failure": str(getattr(injector, "failure", "") or ""),
            "report": report,
        },
    )
