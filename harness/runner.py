"""Plan, execute, judge: a ``RunRequest`` in, a ``RunResult`` out.

The CLI (``run`` and ``rerun``), the pytest plugin and library users build one
frozen ``RunRequest`` and call ``run`` once. The runner never prints; it emits
events to its listeners (``harness.hooks``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import Interrupted
from harness.evidence import EvidenceWriter
from harness.executor import Executor, LocalProcessExecutor
from harness.hooks import Dispatcher, Listener, RunInfo
from harness.judge import judge_criterion, release_verdict
from harness.model import (
    ContractSet,
    Criterion,
    CriterionResult,
    FalsifierOutcome,
    FalsifierResult,
    InvariantResult,
    RunResult,
    Verdict,
)
from harness.plan import CheckStarted, Profile, make_plan


@dataclass(frozen=True)
class RunRequest:
    """Everything one run needs, decided before it starts (built once by the CLI)."""

    contracts: ContractSet
    criteria: tuple[Criterion, ...]
    profile: Profile = Profile.FULL
    seed: int | None = None  # None: a random seed, recorded
    jobs: int = 1
    evidence_root: Path | None = None  # None: write no evidence bundle
    root: Path = field(default_factory=Path.cwd)  # the project root: on sys.path for bindings
    default_timeout: float = 600.0
    allowed: tuple[str, ...] = ()  # allowed binding packages; empty: any
    selection: Mapping[str, object] = field(default_factory=dict)  # recorded, for rerun
    signer: Any = None  # a harness.signing.Signer, or None (unsigned)
    outputs: tuple[Listener, ...] = ()  # terminal and report writers
    executor: Executor | None = None  # None: a LocalProcessExecutor of ``jobs`` workers
    run_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", Profile(self.profile))
        object.__setattr__(self, "criteria", tuple(self.criteria))
        object.__setattr__(self, "allowed", tuple(self.allowed))
        object.__setattr__(self, "outputs", tuple(self.outputs))


def new_run_id() -> str:
    now = _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def run_contracts(
    contracts: ContractSet, criteria: Sequence[Criterion], **options: Any
) -> RunResult:
    """``run(RunRequest(contracts, criteria, **options))``: the library's shortcut."""
    return run(RunRequest(contracts, tuple(criteria), **options))


def run(request: RunRequest) -> RunResult:
    """Run the selected criteria. Raises Interrupted (after run_finished) on Ctrl-C."""
    contracts, profile = request.contracts, request.profile
    seed = secrets.randbits(32) if request.seed is None else request.seed
    run_id = request.run_id or new_run_id()
    root = request.root
    evidence_root = request.evidence_root
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
        request.criteria,
        seed=seed,
        profile=profile,
        checks_dir=checks_dir,
        root=root,
        default_timeout=request.default_timeout,
        allowed=request.allowed,
        options=options,
    )
    executor = request.executor or LocalProcessExecutor(request.jobs)
    listeners: list[Listener] = list(request.outputs)
    if evidence_root is not None:
        listeners.insert(0, EvidenceWriter(evidence_root, root, request.signer))
    events = Dispatcher(listeners)
    started = now_iso()
    info = RunInfo(
        run_id,
        seed,
        profile,
        started,
        dict(request.selection),
        str(run_dir) if evidence_root is not None else "",
        getattr(executor, "jobs", request.jobs),
    )
    events.run_started(info, contracts, plan)
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
            if profile is Profile.TEETH:
                result = _teeth_verdict(result)
            finished[c.id] = result
            events.criterion_finished(result)

    try:
        complete_ready()
        for event in executor.run(plan.tasks):
            if isinstance(event, CheckStarted):
                events.check_started(event.task.key, event.task.kind)
                continue
            done[event.task.key] = event.result
            if isinstance(event.result, InvariantResult):
                events.invariant_finished(event.result)
            else:
                events.falsifier_finished(event.result)
            complete_ready()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        executor.shutdown(kill=interrupted)
    ordered = tuple(finished[c.id] for c in plan.criteria if c.id in finished)
    verdict = release_verdict(ordered) if not interrupted else Verdict.UNPROVEN
    run_result = RunResult(
        run_id=run_id,
        verdict=verdict,
        criteria=ordered,
        seed=seed,
        started=started,
        finished=now_iso(),
        profile=profile.value,
        contract_digest=contracts.digest,
        tool_version=__version__,
        interrupted=interrupted,
        evidence_dir=str(run_dir) if evidence_root is not None else "",
    )
    events.run_finished(run_result)
    if tmp is not None:
        tmp.cleanup()
    if interrupted:
        raise Interrupted(
            f"run {run_id} interrupted: {len(ordered)} of "
            f"{len(plan.criteria)} criteria finished; evidence marked incomplete"
        )
    return run_result


def _teeth_verdict(result: CriterionResult) -> CriterionResult:
    """Under --teeth only mutants run: GO means every mutant was killed."""
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
