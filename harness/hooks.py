"""The extension points of a run, grouped by phase. The runner never prints:
the terminal, JSON, JUnit, Markdown, GitHub and evidence writers all listen to
these same events.

Every listener subclasses ``Listener`` and overrides what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.model import (
        ContractSet,
        CriterionResult,
        FalsifierResult,
        InvariantResult,
        RunResult,
    )
    from harness.plan import Plan


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    seed: int
    profile: str
    started: str
    selection: dict[str, object]
    evidence_dir: str  # "" when the run writes no evidence
    jobs: int
    # what ran the checks: {"name": "local"}, or a Dask cluster's scheduler, workers
    # and the digests they were held to (harness.dask_executor)
    executor: dict[str, object] = field(default_factory=dict)


class Listener:
    # -- load / plan -------------------------------------------------------
    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Plan) -> None:
        """Fires once, after the contracts loaded and the plan was made."""

    # -- run ---------------------------------------------------------------
    def checks_starting(self) -> None:
        """Fires once, after the run's services started and before the first check."""

    def check_started(self, key: str, kind: str) -> None:
        """Fires when a worker picks up a check (an invariant or a falsifier)."""

    def check_sources(self, key: str, digests: Mapping[str, str]) -> None:
        """Fires when a check (an invariant's, or a falsifier's) has ended, before its
        result: ``{path: sha256}`` of the project source files its process had loaded,
        paths relative to the project root, digested by the coordinator."""

    def invariant_finished(self, result: InvariantResult) -> None:
        """Fires when an invariant's check has been run and judged."""

    def falsifier_finished(self, result: FalsifierResult) -> None:
        """Fires when a falsifier has run (KILLED, MISSED, SURVIVED, REFUTED, ERROR)."""

    def service_started(self, key: str, record: Mapping[str, object]) -> None:
        """Fires when a service the run started is ready (``record["ready_s"]``) or
        failed to become ready (``record["error"]``), before the checks that use it."""

    def service_stopped(self, key: str, record: Mapping[str, object], log: Path) -> None:
        """Fires when a service the run started (``harness.services``) has been
        stopped, after the checks: what it was (``record``) and its log file."""

    # -- report ------------------------------------------------------------
    def criterion_finished(self, result: CriterionResult) -> None:
        """Fires when every invariant and falsifier of a criterion is done."""

    def run_finished(self, result: RunResult) -> None:
        """Fires once at the end, also after an interruption (result.interrupted)."""


class Dispatcher(Listener):
    """Forwards every event to each listener in order."""

    def __init__(self, listeners: list[Listener]) -> None:
        self.listeners = listeners

    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Plan) -> None:
        for lst in self.listeners:
            lst.run_started(info, contracts, plan)

    def checks_starting(self) -> None:
        for lst in self.listeners:
            lst.checks_starting()

    def check_started(self, key: str, kind: str) -> None:
        for lst in self.listeners:
            lst.check_started(key, kind)

    def check_sources(self, key: str, digests: Mapping[str, str]) -> None:
        for lst in self.listeners:
            lst.check_sources(key, digests)

    def invariant_finished(self, result: InvariantResult) -> None:
        for lst in self.listeners:
            lst.invariant_finished(result)

    def falsifier_finished(self, result: FalsifierResult) -> None:
        for lst in self.listeners:
            lst.falsifier_finished(result)

    def service_started(self, key: str, record: Mapping[str, object]) -> None:
        for lst in self.listeners:
            lst.service_started(key, record)

    def service_stopped(self, key: str, record: Mapping[str, object], log: Path) -> None:
        for lst in self.listeners:
            lst.service_stopped(key, record, log)

    def criterion_finished(self, result: CriterionResult) -> None:
        for lst in self.listeners:
            lst.criterion_finished(result)

    def run_finished(self, result: RunResult) -> None:
        """Every listener finishes (the report writers too) even if one fails;
        the first failure is raised afterwards."""
        first: BaseException | None = None
        for lst in self.listeners:
            try:
                lst.run_finished(result)
            except Exception as exc:  # re-raised below, once every listener ran
                first = first or exc
        if first is not None:
            raise first
