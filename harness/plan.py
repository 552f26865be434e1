"""What a run will do, decided before anything runs: profiles, tasks, seeds, the plan.

This module sits just above the data model: the hooks, the worker, the
executor, the runner and the evidence writer all import it, and it imports
nothing of theirs. It also holds the two events an executor sends back to the
runner (``CheckStarted``, ``CheckDone``) and the one factory that turns a
finished call into a check's result (``CheckCall`` -> ``result_of``), modelled
on pytest's ``CallInfo.from_call``.
"""

from __future__ import annotations

import enum
import hashlib
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness.errors import NothingSelected
from harness.model import (
    ContractSet,
    Criterion,
    Falsifier,
    FalsifierOutcome,
    FalsifierResult,
    Invariant,
    InvariantOutcome,
    InvariantResult,
)

T = TypeVar("T")


class Profile(enum.StrEnum):
    """Which falsifiers a run includes."""

    FULL = "full"  #: everything: the readiness run
    FAST = "fast"  #: no mutants, no slow falsifiers (merge gating); GO becomes UNPROVEN-FAST
    TEETH = "teeth"  #: only the mutants: does every check still have teeth?

    def runs_invariants(self) -> bool:
        return self is not Profile.TEETH

    def skips(self, falsifier: Falsifier) -> bool:
        if self is Profile.FAST:
            return falsifier.kind == "mutant" or falsifier.slow
        if self is Profile.TEETH:
            return falsifier.kind != "mutant"
        return False


def derive_seed(run_seed: int, key: str) -> int:
    """A check's seed: a function of the run's seed and the check's ID only."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{key}".encode()).digest()[:4], "big")


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work for a worker: an invariant's check, or a falsifier attacking one."""

    key: str  # the invariant or falsifier ID
    invariant: Invariant
    falsifier: Falsifier | None
    seed: int
    check_dir: str  # logs and artifacts of this task land here
    timeout: float
    root: str  # the project root (on sys.path, the cwd of commands)
    allowed: tuple[str, ...] = ()
    fresh: bool = False  # run in a worker of its own that exits afterwards
    options: dict[str, Any] = field(default_factory=dict)  # e.g. hypothesis db dir, replays

    @property
    def kind(self) -> str:
        """'check' for an invariant's own check, else the falsifier's kind."""
        return self.falsifier.kind if self.falsifier else "check"


@dataclass
class Plan:
    criteria: list[Criterion]
    tasks: list[Task]
    not_run: list[FalsifierResult] = field(default_factory=list)  # skipped by the profile
    keys_of: dict[str, list[str]] = field(default_factory=dict)  # criterion -> task keys


def make_plan(
    contracts: ContractSet,
    criteria: Sequence[Criterion],
    *,
    seed: int,
    profile: Profile,
    checks_dir: Path,
    root: Path,
    default_timeout: float,
    allowed: Sequence[str] = (),
    options: dict[str, Any] | None = None,
) -> Plan:
    if not criteria:
        raise NothingSelected("the selection matched no criterion (see `harness list`)")
    profile = Profile(profile)
    invariants = contracts.invariants
    plan = Plan(list(criteria), [])
    planned: set[str] = set()
    not_run: set[str] = set()

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
            if profile.runs_invariants():
                add(inv_id, inv_id, None)
                keys.append(inv_id)
            for f in contracts.falsifiers_of(inv_id):
                if profile.skips(f):
                    if profile is Profile.FAST and f.id not in not_run:
                        not_run.add(f.id)
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


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class CheckStarted:
    """An executor handed ``task`` to a worker."""

    task: Task


@dataclass(frozen=True, slots=True)
class CheckDone:
    """``task`` finished (or crashed, or timed out): ``result`` is its judged outcome."""

    task: Task
    result: InvariantResult | FalsifierResult


ExecutorEvent = CheckStarted | CheckDone


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class CheckCall(Generic[T]):
    """One call of a check (or of the falsifier machinery): its value or its error,
    when it started and stopped. Built by ``from_call`` or, for a call that never
    returned to us (a dead worker, a timeout), by ``failed``."""

    value: T | None
    error: str  # "" when the call returned
    start: float  # time.time() at the start
    stop: float
    duration: float  # measured with perf_counter

    @classmethod
    def from_call(cls, func: Callable[[], T]) -> CheckCall[T]:
        start, t0 = time.time(), time.perf_counter()
        try:
            value: T | None = func()
            error = ""
        except Exception as exc:  # the machinery broke: recorded as ERROR, never a pass
            import sys

            sys.stderr.write(traceback.format_exc(limit=8))
            value, error = None, f"{type(exc).__name__}: {exc}"
        duration = time.perf_counter() - t0
        return cls(value, error, start, time.time(), duration)

    @classmethod
    def failed(cls, message: str, duration: float = 0.0) -> CheckCall[Any]:
        stop = time.time()
        return cls(None, message, stop - duration, stop, duration)


def result_of(
    task: Task,
    call: CheckCall[InvariantResult | FalsifierResult],
    logs: dict[str, str] | None = None,
) -> InvariantResult | FalsifierResult:
    """The one factory of a task's result: the call's value with its duration and
    logs, or the ERROR result naming what went wrong."""
    import dataclasses

    logs = dict(logs or {})
    if call.value is not None and not call.error:
        return dataclasses.replace(call.value, duration=call.duration, logs=logs)
    message = call.error or "the check returned nothing"
    if task.falsifier is None:
        return InvariantResult(
            task.invariant.id,
            InvariantOutcome.ERROR,
            {},
            (),
            call.duration,
            task.seed,
            message,
            logs,
        )
    f = task.falsifier
    return FalsifierResult(
        f.id, f.target, f.kind, FalsifierOutcome.ERROR, call.duration, message, logs=logs
    )
