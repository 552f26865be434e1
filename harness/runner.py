"""Plan, execute, judge: a ``RunRequest`` in, a ``RunResult`` out.

The CLI (``run`` and ``rerun``), the pytest plugin and library users build one
frozen ``RunRequest`` and call ``run`` once. The runner never prints; it emits
events to its listeners (``harness.hooks``).

The runner is the coordinator's side of the trust boundary (SECURITY.md): checks
run in fresh worker processes with a scrubbed environment and their own scratch
folder outside the evidence; what they report comes back as plain data and is
judged here (``judge_task``); the signing key is loaded only after the executor
has shut down and every worker is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, regressions, services
from harness.dask_executor import DaskExecutor
from harness.errors import ContractError, Interrupted, UsageError
from harness.evidence import EvidenceWriter
from harness.executor import Executor, InlineExecutor, LocalProcessExecutor
from harness.fsutil import write_beneath
from harness.history import last_durations
from harness.hooks import Dispatcher, Listener, RunInfo
from harness.judge import (
    apply_waiver,
    judge_criterion,
    judge_task,
    overlong_waivers,
    release_verdict,
    today_utc,
)
from harness.model import (
    MAX_WAIVER_DAYS,
    ContractSet,
    Criterion,
    CriterionResult,
    FailOn,
    FalsifierOutcome,
    FalsifierResult,
    InvariantResult,
    RunResult,
    Verdict,
)
from harness.plan import (
    CheckStarted,
    Limits,
    Observed,
    Profile,
    Task,
    longest_first,
    make_plan,
)
from harness.procs import (
    NEVER_PASS,
    REDACT_MIN_LENGTH,
    become_subreaper,
    children,
    interrupts_held,
    is_subreaper,
    kill_tree,
    make_undumpable,
    scrubbed_environment,
    secret_values,
)
from harness.sources import SourceDigests


@dataclass(frozen=True)
class RunRequest:
    """Everything one run needs, decided before it starts (built once by the CLI)."""

    contracts: ContractSet
    criteria: tuple[Criterion, ...]
    profile: Profile = Profile.FULL
    fail_on: FailOn = FailOn.UNPROVEN  # the gate: which blocker verdicts fail the run
    seed: int | None = None  # None: a random seed, recorded
    jobs: int = 1
    evidence_root: Path | None = None  # None: write no evidence bundle
    # whose newest complete run orders the checks, longest first (None: evidence_root);
    # read only, so a run that writes no evidence still starts its long checks first
    history_root: Path | None = None
    root: Path = field(default_factory=Path.cwd)  # the project root: on sys.path for bindings
    default_timeout: float = 600.0
    allowed: tuple[str, ...] = ()  # allowed binding packages; empty: any
    selection: Mapping[str, object] = field(default_factory=dict)  # recorded, for rerun
    signer: Any = None  # a Signer, or a callable returning one (called after the checks), or None
    outputs: tuple[Listener, ...] = ()  # terminal and report writers
    executor: Executor | None = None  # None: the one ``executor_name`` names, of ``jobs`` workers
    executor_name: str = "local"  # "local": the fork server's pool; "dask": harness.dask_executor
    scheduler: str | None = None  # dask: the scheduler's address; None: start a LocalCluster
    run_id: str | None = None
    pass_env: tuple[str, ...] = ()  # variables checks get beyond the allowlist
    # variables set for every check ({scratch}: its scratch folder); pass-env values win
    check_env: Mapping[str, str] = field(default_factory=dict)
    preload: tuple[str, ...] = ()  # modules the fork server imports before any check
    # where found counterexamples are kept and replayed from (None: contracts/.regressions)
    regressions: Path | None = None
    limits: Limits = field(default_factory=Limits)  # per-check defaults
    # the date waivers are judged by (None: today, UTC, when the run starts)
    today: _dt.date | None = None
    # a waiver expiring more than this many days after ``today`` is a contract error
    max_waiver_days: int = MAX_WAIVER_DAYS
    # values to redact from the logs a check writes, of at least REDACT_MIN_LENGTH
    # characters: a shorter one a check was not given, it could guess by printing every
    # candidate and seeing which comes back redacted. Never the signing passphrase or PIN.
    secrets: tuple[str, ...] = ()
    # the environment probe (harness.environment.EnvironmentProbe) the caller started
    # early, so that it runs while the contracts load; the caller ends it if the run
    # never starts. None: the evidence writer starts one
    env_probe: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", Profile(self.profile))
        object.__setattr__(self, "fail_on", FailOn(self.fail_on))
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


STOPPING_NOTE = (
    "harness: stopping the checks and services and writing the evidence; "
    "a Ctrl-C now takes effect once that is done (kill -9 ends the run at once, "
    "leaving the bundle marked INCOMPLETE)"
)


def run(request: RunRequest) -> RunResult:
    """Run the selected criteria. Raises Interrupted (after run_finished) on Ctrl-C."""
    contracts, profile = request.contracts, request.profile
    today = request.today or today_utc()
    overlong = overlong_waivers(request.criteria, today, request.max_waiver_days)
    if overlong:  # before anything is written
        raise ContractError(overlong)
    seed = secrets.randbits(32) if request.seed is None else request.seed
    run_id = request.run_id or new_run_id()
    root = request.root
    evidence_root = request.evidence_root
    make_undumpable()  # other processes of this user cannot read our memory or environ
    # checks work in a private folder outside the evidence: only we write the bundle
    scratch = Path(tempfile.mkdtemp(prefix=f"harness-{run_id}-"))
    checks_dir = scratch / "checks"
    run_dir = evidence_root / run_id if evidence_root is not None else scratch
    options = {
        "hypothesis_db": str(root / ".harness" / "hypothesis"),
        "regressions_dir": str(request.regressions or root / regressions.DEFAULT_STORE),
    }
    try:
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
            limits=request.limits,
            environ={k: v for k, v in os.environ.items() if k not in NEVER_PASS},
            approved_env=request.pass_env,
            check_env=request.check_env,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shared = _shared_services(plan.tasks)
    remote = request.executor_name == "dask" and request.scheduler and request.executor is None
    if shared and remote:
        shutil.rmtree(scratch, ignore_errors=True)
        names = ", ".join(sorted(shared))
        raise UsageError(
            f"the selection uses services ({names}), which listen on this machine's loopback "
            "only, out of reach of a remote Dask cluster: run it with --executor local, or "
            "--executor dask without --scheduler (a LocalCluster here)"
        )
    tasks_by_key = {t.key: t for t in plan.tasks}
    # the source files workers name, digested here (never by a worker), once per run
    sources = SourceDigests(root, exclude=[evidence_root] if evidence_root is not None else [])
    redactions = secret_values(os.environ)
    redactions.update({v: "secret" for v in request.secrets if len(v) >= REDACT_MIN_LENGTH})
    try:
        executor = _executor(request, scratch)
        if isinstance(executor, InlineExecutor) and request.signer is not None:
            raise UsageError(
                "the inline executor runs checks inside the coordinator (no isolation): "
                "it cannot be used for a signed run"
            )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    # an executor that refuses (a Dask worker running other code) stops the run here,
    # before any bundle exists
    executor_info: dict[str, Any] = {
        "name": request.executor_name if request.executor is None else type(executor).__name__
    }
    prepare = getattr(executor, "prepare", None)
    if callable(prepare):
        try:
            executor_info = dict(prepare())
        except BaseException:
            executor.shutdown(kill=True)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    # the checks that took longest last time start first (unknown ones before them)
    history = request.history_root or evidence_root
    order = longest_first(plan.tasks, last_durations(history) if history is not None else {})
    listeners: list[Listener] = list(request.outputs)
    if evidence_root is not None:
        listeners.insert(
            0,
            EvidenceWriter(
                evidence_root,
                root,
                request.signer,
                redactions=redactions,
                probe=request.env_probe,
            ),
        )
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
        executor_info,
    )
    before = set(children(os.getpid()))
    events.run_started(info, contracts, plan)
    targets = {inv: [f.id for f in contracts.falsifiers_of(inv)] for inv in contracts.invariants}
    done: dict[str, InvariantResult | FalsifierResult] = {r.falsifier_id: r for r in plan.not_run}
    for r in plan.not_run:
        events.falsifier_finished(r)
    finished: dict[str, CriterionResult] = {}
    interrupted = False

    # the checks each criterion still waits for, and the criteria each check is awaited
    # by (in the plan's order): a result looks only at its own criteria, so a run of
    # many criteria does not rescan them all after every check
    pending = {c.id: {k for k in plan.keys_of[c.id] if k not in done} for c in plan.criteria}
    awaited_by: dict[str, list[Criterion]] = {}
    for c in plan.criteria:
        for k in pending[c.id]:
            awaited_by.setdefault(k, []).append(c)

    def complete_ready(key: str | None = None) -> None:
        """Judge the criteria ``key``'s result completes (all that are complete: None)."""
        if key is None:
            ready = [c for c in plan.criteria if not pending[c.id]]
        else:
            ready = []
            for c in awaited_by.get(key, ()):
                pending[c.id].discard(key)
                if not pending[c.id]:
                    ready.append(c)
        for c in ready:
            if c.id in finished:
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
            result = apply_waiver(result, c.waiver, today)
            finished[c.id] = result
            events.criterion_finished(result)

    def record(task: Task, result: InvariantResult | FalsifierResult) -> None:
        done[task.key] = result
        if isinstance(result, InvariantResult):
            events.invariant_finished(result)
        else:
            events.falsifier_finished(result)
        complete_ready(task.key)

    running: dict[str, services.Instance] = {}
    # orphans of checks and services (a daemon in a new session) come back here, and
    # are killed with the rest (``_end_strays``), for a library caller too
    reaper = is_subreaper()
    become_subreaper()
    with contextlib.ExitStack() as held:
        try:
            begin = getattr(executor, "begin", None)
            if callable(begin):  # the fork server preloads while the services start
                begin()
            complete_ready()
            if shared:  # started once, before the first check; the checks get their URLs
                services.start_all(
                    list(shared.values()),
                    scratch / "services",
                    scrubbed_environment(os.environ, request.pass_env),
                    root,
                    memory=request.limits.memory,
                    into=running,  # a Ctrl-C meanwhile still stops what started
                )
                for inst in running.values():
                    events.service_started(inst.service.key, inst.record())
                order, refused = _hand_services(order, running, redactions)
                tasks_by_key.update({t.key: t for t in order})
                for task, reason in refused:
                    record(task, _judged(task, Observed.failed(reason), {}))
            events.checks_starting()
            for event in executor.run(order):
                if isinstance(event, CheckStarted):
                    events.check_started(event.task.key, event.task.kind)
                    continue
                task = tasks_by_key.get(event.task.key, event.task)
                events.check_sources(task.key, sources.digests(event.observed.sources))
                observed = event.observed
                gone = _services_down(task, running, redactions)
                if gone:  # what a check got while its service was gone is no evidence
                    observed = Observed.failed(gone, observed.duration)
                result = _judged(task, observed, _log_names(task, event.logs), event.notes)
                _save_counterexample(task, result, run_id)
                record(task, result)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # from here to the sealed bundle, a Ctrl-C (or SIGTERM) is noted, not raised: a
            # second one while the checks and services stop would lose the run's results
            late = held.enter_context(interrupts_held(STOPPING_NOTE))
            executor.shutdown(kill=interrupted)
            try:
                services.stop_all(running.values())  # all at once, before anything is signed
                for inst in running.values():
                    events.service_stopped(inst.service.key, inst.record(), inst.log)
            finally:
                _end_strays(before)  # nothing a check or a service started outlives them
                if not reaper:
                    become_subreaper(False)
        ordered = tuple(finished[c.id] for c in plan.criteria if c.id in finished)
        verdict = release_verdict(ordered) if not interrupted else Verdict.UNPROVEN
        measure = getattr(executor, "cpu_seconds", None)
        measured = measure() if callable(measure) else {}
        check_cpu = {k: round(measured[k], 3) for k in sorted(done) if k in measured}
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
            fail_on=request.fail_on.value,
            check_cpu=check_cpu,
        )
        events.run_finished(run_result)
        if not interrupted:
            shutil.rmtree(scratch, ignore_errors=True)
        if interrupted:
            raise Interrupted(
                f"run {run_id} interrupted: {len(ordered)} of "
                f"{len(plan.criteria)} criteria finished; evidence marked incomplete; "
                f"the checks' scratch folder is kept in {scratch}"
            )
    if late:  # a Ctrl-C or SIGTERM while a finished run wrote its bundle: the bundle is
        # whole; the signal now reaches the caller (its handlers are back)
        signal.raise_signal(late[0])
    return run_result


def _executor(request: RunRequest, scratch: Path) -> Executor:
    """The executor a request names (a UsageError for an unknown name, or for Dask
    without the ``distributed`` package)."""
    if request.executor is not None:
        return request.executor
    if request.executor_name == "dask":
        # the evidence folder is left out of the source digest workers are held to
        root = request.root.resolve()
        evidence = request.evidence_root.resolve() if request.evidence_root else None
        inside = evidence is not None and evidence.is_relative_to(root)
        return DaskExecutor(
            request.jobs,
            root=request.root,
            scheduler=request.scheduler,
            preload=request.preload,
            pass_env=request.pass_env,
            exclude=[evidence.relative_to(root).as_posix()] if evidence and inside else [],
            log_dir=scratch,
        )
    if request.executor_name != "local":
        raise UsageError(f"executor {request.executor_name!r} is not one of local, dask")
    return LocalProcessExecutor(
        request.jobs,
        env=scrubbed_environment(os.environ, request.pass_env),
        preload=request.preload,
        root=request.root,
        log_dir=scratch,
    )


def _shared_services(tasks: Sequence[Task]) -> dict[str, services.Service]:
    """The services the run starts once: those of every task but the mutants (a
    mutant's worker starts a private instance with the mutant applied)."""
    out: dict[str, services.Service] = {}
    for t in tasks:
        if t.kind != "mutant":
            for svc in t.invariant.services:
                out.setdefault(svc.key, svc)
    return out


def _hand_services(
    tasks: Sequence[Task],
    running: Mapping[str, services.Instance],
    redactions: Mapping[str, str],
) -> tuple[list[Task], list[tuple[Task, str]]]:
    """Each task that uses shared services, with their URLs and folders in its
    environment; those whose service is not running are refused with its reason
    (its log's tail redacted of ``redactions``)."""
    ready: list[Task] = []
    refused: list[tuple[Task, str]] = []
    for t in tasks:
        if t.kind == "mutant" or not t.invariant.services:
            ready.append(t)
            continue
        failed = services.down([running[svc.key] for svc in t.invariant.services], redactions)
        if failed:
            refused.append((t, failed))
            continue
        env = dict(t.env)
        for svc in t.invariant.services:
            inst = running[svc.key]
            env.update(services.service_env(svc.name, inst.url, inst.folder))
        ready.append(dataclasses.replace(t, env=env))
    return ready, refused


def _services_down(
    task: Task, running: Mapping[str, services.Instance], redactions: Mapping[str, str]
) -> str:
    """Why a shared service ``task`` used is no longer up when its result arrives
    (it exited during the run), or "" (a mutant's are its own: ``worker``)."""
    if task.kind == "mutant" or not running:
        return ""
    used = [running[svc.key] for svc in task.invariant.services if svc.key in running]
    return services.down(used, redactions)


def _judged(
    task: Task, observed: Any, logs: Mapping[str, str], notes: Mapping[str, str] | None = None
) -> InvariantResult | FalsifierResult:
    """``judge_task``, with any failure to judge what a worker sent (an absurd
    number, a regex that does not compile) an ERROR of that task, never a crash.
    ``notes``: what the executor says of the run (a retry), recorded with the result."""
    try:
        return _noted(task, judge_task(task, observed, logs), notes)
    except Exception as exc:  # the coordinator must survive any worker's data
        return judge_task(
            task,
            Observed.failed(f"cannot judge what the check returned: {type(exc).__name__}: {exc}"),
        )


def _end_strays(before: set[int]) -> None:
    """Kill and reap every child of ours that appeared during the run (a check's
    orphan re-parented here when the coordinator is a subreaper, or a fork
    server that would not stop)."""
    for pid in set(children(os.getpid())) - before:
        kill_tree(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _log_names(task: Task, logs: Mapping[str, str]) -> dict[str, str]:
    """The logs a result names, as the evidence stores them (relative to the
    criterion's folder)."""
    return {name: f"logs/{task.key}.{name}.txt" for name in logs}


def _noted(
    task: Task,
    result: InvariantResult | FalsifierResult,
    executor_notes: Mapping[str, str] | None = None,
) -> Any:
    """Say in the result when a log is longer than the output limit keeps, and what
    the executor noted (``harness.retry``: a lost worker's check ran again)."""
    extra: dict[str, Any] = dict(executor_notes or {})
    notes = {}
    for name in result.logs:
        path = Path(task.check_dir) / f"{name}.txt"
        size = path.stat().st_size if path.is_file() else 0
        if size > task.limits.output:
            notes[name] = f"truncated: kept {task.limits.output} of {size} bytes"
    if notes:
        extra["harness.output"] = notes
    if not extra:
        return result
    if isinstance(result, InvariantResult):
        return dataclasses.replace(result, observations={**result.observations, **extra})
    return dataclasses.replace(result, detail={**result.detail, **extra})


def _save_counterexample(
    task: Task, result: InvariantResult | FalsifierResult, run_id: str
) -> None:
    """A refuted property's counterexample: into the evidence (as the check's
    artifact) and the regression store, replayed first by later runs."""
    if not isinstance(result, FalsifierResult) or result.outcome is not FalsifierOutcome.REFUTED:
        return
    if "counterexample" not in result.detail or task.falsifier is None:
        return
    params = result.detail["counterexample"]
    try:
        text = json.dumps(params, indent=2, sort_keys=True, default=repr)
        # never through a link the check planted in its folder
        write_beneath(Path(task.check_dir), "artifacts/counterexample.json", [text.encode()])
        store = task.options.get("regressions_dir")
        if store:
            strategy = result.detail.get("strategy")
            regressions.add(
                Path(store), task.falsifier.id, json.loads(text),
                strategy if isinstance(strategy, str) else "", run_id, result.message,
            )  # fmt: skip
    except (OSError, ValueError, RecursionError):
        pass  # the result says REFUTED either way; the store is a convenience


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
