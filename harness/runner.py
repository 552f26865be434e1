"""Plan, execute, judge: contracts and a selection in, a RunResult out.

The runner never prints; it emits events to its listeners (harness.hooks).
"""

from __future__ import annotations

import datetime as _dt
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import Interrupted, NothingSelected
from harness.executor import Executor, LocalProcessExecutor
from harness.hooks import Dispatcher, Listener, RunInfo
from harness.judge import judge_criterion, release_verdict
from harness.model import (
    ContractSet,
    Criterion,
    CriterionResult,
    Falsifier,
    FalsifierOutcome,
    FalsifierResult,
    InvariantResult,
    RunResult,
    Verdict,
)
from harness.worker import Task, derive_seed

PROFILES = ("full", "fast", "teeth")


@dataclass
class Plan:
    criteria: list[Criterion]
    tasks: list[Task]
    not_run: list[FalsifierResult] = field(default_factory=list)  # skipped by the profile
    keys_of: dict[str, list[str]] = field(default_factory=dict)  # criterion -> task keys


def new_run_id() -> str:
    now = _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def make_plan(
    contracts: ContractSet,
    criteria: Sequence[Criterion],
    *,
    seed: int,
    profile: str,
    checks_dir: Path,
    root: Path,
    default_timeout: float,
    allowed: Sequence[str] = (),
    options: dict[str, Any] | None = None,
) -> Plan:
    if not criteria:
        raise NothingSelected("the selection matched no criterion (see `harness list`)")
    invariants = contracts.invariants
    plan = Plan(list(criteria), [])
    planned: set[str] = set()

    def add(key: str, inv_id: str, falsifier: Falsifier | None) -> None:
        if key in planned:
            return
        planned.add(key)
        inv = invariants[inv_id]
        timeout = (
            (falsifier.timeout if falsifier and falsifier.timeout else None)
            or inv.timeout
            or default_timeout
        )
        plan.tasks.append(
            Task(
                key=key,
                invariant=inv,
                falsifier=falsifier,
                seed=derive_seed(seed, key),
                check_dir=str(checks_dir / key),
                timeout=float(timeout),
                root=str(root),
                allowed=tuple(allowed),
                fresh=falsifier is not None and falsifier.kind != "property",
                options=dict(options or {}),
            )
        )

    for c in criteria:
        keys: list[str] = []
        for inv_id in c.invariants:
            if profile != "teeth":
                add(inv_id, inv_id, None)
                keys.append(inv_id)
            for f in contracts.falsifiers_of(inv_id):
                skip = (profile == "fast" and (f.kind == "mutant" or f.slow)) or (
                    profile == "teeth" and f.kind != "mutant"
                )
                if skip:
                    if profile == "fast" and f.id not in {r.falsifier_id for r in plan.not_run}:
                        why = "mutant" if f.kind == "mutant" else "slow"
                        plan.not_run.append(
                            FalsifierResult(
                                f.id,
                                f.target,
                                f.kind,
                                FalsifierOutcome.NOT_RUN,
                                0.0,
                                f"{why} falsifier skipped by --fast",
                            )
                        )
                    continue
                add(f.id, inv_id, f)
                keys.append(f.id)
        plan.keys_of[c.id] = keys
    return plan


def run_contracts(
    contracts: ContractSet,
    criteria: Sequence[Criterion],
    *,
    listeners: Sequence[Listener] = (),
    executor: Executor | None = None,
    jobs: int = 1,
    seed: int | None = None,
    profile: str = "full",
    evidence_root: Path | None = None,
    root: Path | None = None,
    default_timeout: float = 600.0,
    allowed: Sequence[str] = (),
    selection: dict[str, object] | None = None,
    run_id: str | None = None,
    signer: Any = None,
) -> RunResult:
    """Run the selected criteria. Raises Interrupted (after run_finished) on Ctrl-C."""
    seed = secrets.randbits(32) if seed is None else seed
    run_id = run_id or new_run_id()
    root = root or Path.cwd()
    tmp = None
    if evidence_root is not None:
        run_dir = evidence_root / run_id
        checks_dir = run_dir / "checks"
        options = {
            "hypothesis_db": str(evidence_root / ".hypothesis"),
            "regressions_dir": str(evidence_root / "regressions"),
        }
    else:
        tmp = tempfile.TemporaryDirectory(prefix="harness-")
        run_dir = Path(tmp.name)
        checks_dir = run_dir / "checks"
        options = {
            "hypothesis_db": str(run_dir / ".hypothesis"),
            "regressions_dir": str(root / ".harness" / "regressions"),
        }
    plan = make_plan(
        contracts,
        criteria,
        seed=seed,
        profile=profile,
        checks_dir=checks_dir,
        root=root,
        default_timeout=default_timeout,
        allowed=allowed,
        options=options,
    )
    listeners = list(listeners)
    if evidence_root is not None:
        from harness.evidence import EvidenceWriter

        listeners.insert(0, EvidenceWriter(evidence_root, root, signer))
    events = Dispatcher(listeners)
    started = now_iso()
    info = RunInfo(
        run_id,
        seed,
        profile,
        started,
        dict(selection or {}),
        str(run_dir) if evidence_root is not None else "",
        getattr(executor, "jobs", jobs),
    )
    events.run_started(info, contracts, plan)
    executor = executor or LocalProcessExecutor(jobs)
    targets = {inv: [f.id for f in contracts.falsifiers_of(inv)] for inv in contracts.invariants}
    done: dict[str, InvariantResult | FalsifierResult] = {r.falsifier_id: r for r in plan.not_run}
    for r in plan.not_run:
        events.falsifier_finished(r)
    finished: dict[str, CriterionResult] = {}
    interrupted = False

    def complete_ready() -> None:
        for c in plan.criteria:
            if c.id in finished:
                continue
            keys = plan.keys_of[c.id]
            if not all(k in done for k in keys):
                continue
            inv_results = [done[i] for i in c.invariants if i in done]
            fal_ids = [f for i in c.invariants for f in targets.get(i, ())]
            fal_results = [done[f] for f in fal_ids if f in done]
            duration = sum(r.duration for r in (*inv_results, *fal_results))
            result = judge_criterion(
                c.id,
                c.title,
                c.severity,
                c.location,
                [r for r in inv_results if isinstance(r, InvariantResult)],
                [r for r in fal_results if isinstance(r, FalsifierResult)],
                targets,
                duration,
            )
            if profile == "teeth":
                result = _teeth_verdict(result)
            finished[c.id] = result
            events.criterion_finished(result)

    try:
        complete_ready()
        for event in executor.run(plan.tasks):
            if event[0] == "start":
                task = event[1]
                events.check_started(task.key, task.falsifier.kind if task.falsifier else "check")
                continue
            _, task, result = event
            done[task.key] = result
            if isinstance(result, InvariantResult):
                events.invariant_finished(result)
            else:
                events.falsifier_finished(result)
            complete_ready()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        executor.shutdown(kill=interrupted) if isinstance(
            executor, LocalProcessExecutor
        ) else executor.shutdown()
    ordered = tuple(finished[c.id] for c in plan.criteria if c.id in finished)
    verdict = release_verdict(ordered) if not interrupted else Verdict.UNPROVEN
    result = RunResult(
        run_id=run_id,
        verdict=verdict,
        criteria=ordered,
        seed=seed,
        started=started,
        finished=now_iso(),
        profile=profile,
        contract_digest=contracts.digest,
        tool_version=__version__,
        interrupted=interrupted,
        evidence_dir=str(run_dir) if evidence_root is not None else "",
    )
    events.run_finished(result)
    if tmp is not None:
        tmp.cleanup()
    if interrupted:
        raise Interrupted(
            f"run {run_id} interrupted: {len(ordered)} of "
            f"{len(plan.criteria)} criteria finished; evidence marked incomplete"
        )
    return result


def _teeth_verdict(result: CriterionResult) -> CriterionResult:
    """Under --teeth only mutants run: GO means every mutant was killed."""
    import dataclasses

    reasons = [
        f"{f.target}: mutant {f.falsifier_id} {f.outcome.value}"
        + (f" ({f.message})" if f.outcome is FalsifierOutcome.ERROR else "")
        for f in result.falsifiers
        if f.outcome is not FalsifierOutcome.KILLED
    ]
    if not result.falsifiers:
        reasons.append("no mutant declared")
    verdict = Verdict.GO if not reasons else Verdict.UNPROVEN
    return dataclasses.replace(result, verdict=verdict, reasons=tuple(reasons))
