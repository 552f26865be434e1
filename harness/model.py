"""The data model every part of the harness imports. It imports nothing of ours.

Two halves: what a contract declares (Contract, Criterion, Invariant,
Falsifier, Check, Expectation) and what a run found (InvariantResult,
FalsifierResult, CriterionResult, RunResult). Everything is frozen, slotted
and picklable so that it crosses process boundaries unchanged; results
round-trip through plain dicts (``to_dict``/``from_dict``) for the JSON report.
"""

from __future__ import annotations

import copy
import datetime
import enum
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

RESULTS_SCHEMA_VERSION = 1
WAIVED = "WAIVED"  # how a criterion whose waiver holds is reported (never a Verdict: never GO)


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# --------------------------------------------------------------------------- declared


@dataclass(frozen=True, slots=True)
class Check:
    """One typed binding: exactly one of python, pytest, command is set."""

    kind: str  # "python" | "pytest" | "command"
    target: str | tuple[str, ...]  # "module:function", a node id, or an argv tuple
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "command":
            return "command: " + " ".join(self.target)
        return f"{self.kind}: {self.target}"


@dataclass(frozen=True, slots=True)
class Expectation:
    """Thresholds on one named observation; every comparator must hold."""

    observation: str
    comparators: dict[str, Any]
    location: Location | None = None

    def describe(self) -> str:
        parts = []
        for op, value in self.comparators.items():
            if op in ("rel", "abs"):
                continue
            if op == "approx":
                tol = []
                if "rel" in self.comparators:
                    tol.append(f"rel={self.comparators['rel']}")
                if "abs" in self.comparators:
                    tol.append(f"abs={self.comparators['abs']}")
                parts.append(f"≈ {_show(value)}" + (f" ({', '.join(tol)})" if tol else ""))
            else:
                parts.append(f"{_OP_TEXT.get(op, op)} {_show(value)}")
        return " and ".join(parts)


def _show(value: Any) -> str:
    """A threshold as it reads in YAML: true, null, 0.5, "text"."""
    import json

    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


_OP_TEXT = {
    "eq": "==",
    "ne": "!=",
    "le": "<=",
    "lt": "<",
    "ge": ">=",
    "gt": ">",
    "in": "in",
    "matches": "matches",
}


@dataclass(frozen=True, slots=True)
class Invariant:
    id: str
    title: str
    check: Check
    expect: tuple[Expectation, ...]
    timeout: float | None
    location: Location
    statement: str = ""
    tags: tuple[str, ...] = ()
    declared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as in YAML
    services: tuple[Service, ...] = ()  # the contract's services its check talks to


@dataclass(frozen=True, slots=True)
class Service:
    """A live service a contract's checks talk to (``services:``): the harness starts
    it on a free loopback port, waits for ``ready``, hands checks its base URL and
    stops it (``harness.services``). ``command`` and ``env`` values may use
    ``{python}``, ``{port}`` and ``{dir}``."""

    name: str
    contract: str  # the contract's name: a service belongs to one contract
    command: tuple[str, ...]
    location: Location
    ready: str | None = None  # a path polled with GET until 2xx; None: until it accepts
    env: tuple[tuple[str, str], ...] = ()
    start_timeout: float = 60.0
    stop_timeout: float = 20.0

    @property
    def key(self) -> str:
        """Unique in a run: ``contract.name``."""
        return f"{self.contract}.{self.name}"


@dataclass(frozen=True, slots=True)
class Falsifier:
    id: str
    title: str
    kind: str  # "property" | "fault" | "mutant"
    target: str  # the invariant it attacks
    spec: dict[str, Any]  # the kind's own block (patch/params, strategy/budget, injector)
    location: Location
    timeout: float | None = None
    slow: bool = False
    declared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as in YAML


#: the longest a waiver may run from the day it is judged ([tool.harness] max-waiver-days)
MAX_WAIVER_DAYS = 90


@dataclass(frozen=True, slots=True)
class Waiver:
    """A known failure accepted until a date (a criterion's ``waiver:``): while it
    holds, the criterion is reported WAIVED and blocks nothing; from ``expires`` on
    (a UTC date) it blocks again with its own verdict."""

    owner: str
    reason: str
    link: str
    expires: str  # YYYY-MM-DD: the first day the waiver no longer holds
    location: Location | None = field(default=None, compare=False)

    def expired(self, today: datetime.date) -> bool:
        return today >= datetime.date.fromisoformat(self.expires)


@dataclass(frozen=True, slots=True)
class Criterion:
    id: str
    title: str
    severity: str  # "blocker" | "warn"
    invariants: tuple[str, ...]
    references: tuple[str, ...]
    location: Location
    statement: str = ""
    owner: str = ""
    tags: tuple[str, ...] = ()
    declared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as in YAML
    waiver: Waiver | None = None


@dataclass(frozen=True, slots=True)
class Contract:
    name: str
    title: str
    path: str
    sha256: str
    text: str
    criteria: tuple[Criterion, ...]
    invariants: tuple[Invariant, ...]
    falsifiers: tuple[Falsifier, ...]
    owner: str = ""
    description: str = ""
    services: tuple[Service, ...] = ()

    def items(self) -> tuple[Criterion | Invariant | Falsifier, ...]:
        return (*self.criteria, *self.invariants, *self.falsifiers)


@dataclass(frozen=True, slots=True)
class ContractSet:
    contracts: tuple[Contract, ...]
    digest: str  # sha256 over the sorted (path, sha256) pairs

    @property
    def criteria(self) -> tuple[Criterion, ...]:
        return tuple(c for k in self.contracts for c in k.criteria)

    @property
    def invariants(self) -> dict[str, Invariant]:
        return {i.id: i for k in self.contracts for i in k.invariants}

    @property
    def falsifiers(self) -> tuple[Falsifier, ...]:
        return tuple(f for k in self.contracts for f in k.falsifiers)

    def falsifiers_of(self, invariant_id: str) -> tuple[Falsifier, ...]:
        return tuple(f for f in self.falsifiers if f.target == invariant_id)

    def contract_of(self, item_id: str) -> Contract:
        for k in self.contracts:
            ids = [c.id for c in k.criteria] + [i.id for i in k.invariants]
            ids += [f.id for f in k.falsifiers]
            if item_id in ids:
                return k
        raise KeyError(item_id)

    def find(self, item_id: str) -> Criterion | Invariant | Falsifier:
        for k in self.contracts:
            for item in k.items():
                if item.id == item_id:
                    return item
        raise KeyError(item_id)


# --------------------------------------------------------------------------- outcomes


class InvariantOutcome(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIP = "SKIP"


class FalsifierOutcome(enum.StrEnum):
    SURVIVED = "SURVIVED"  # attack (property, fault): the invariant held
    REFUTED = "REFUTED"  # attack: the invariant broke
    KILLED = "KILLED"  # mutant: the check went red
    MISSED = "MISSED"  # mutant: the check stayed green, it has no teeth
    CRASHED = "CRASHED"  # mutant: the check errored instead of going red (not teeth)
    ERROR = "ERROR"  # the falsifier itself could not run (never a pass)
    NOT_RUN = "NOT_RUN"  # skipped by the profile (--fast); never a pass


class Verdict(enum.StrEnum):
    GO = "GO"
    NO_GO = "NO-GO"
    UNPROVEN = "UNPROVEN"
    UNPROVEN_FAST = "UNPROVEN-FAST"


class FailOn(enum.StrEnum):
    """``--fail-on``: the least bad blocker verdict that fails the run (exit 1).
    Worst first: NO-GO, UNPROVEN, UNPROVEN-FAST; warn criteria never fail it."""

    NO_GO = "no-go"  #: only a NO-GO blocker fails
    UNPROVEN = "unproven"  #: a NO-GO or UNPROVEN blocker fails; UNPROVEN-FAST passes (default)
    UNPROVEN_FAST = "unproven-fast"  #: anything short of GO fails, UNPROVEN-FAST included


class WaiverStatus(enum.StrEnum):
    """What a criterion's waiver did in a run (``judge.apply_waiver``)."""

    ACTIVE = "active"  #: the criterion is not GO and the waiver holds: reported WAIVED
    EXPIRED = "expired"  #: past its date: the criterion is reported and gated by its own verdict
    UNUSED = "unused"  #: the criterion is GO anyway: the waiver can go


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Judgement:
    """One expectation applied to one observation."""

    observation: str
    expected: str
    observed: Any
    ok: bool
    message: str = ""
    error: bool = False  # the observation was of the wrong type: ERROR, not FAIL


@dataclass(frozen=True, slots=True)
class InvariantResult:
    invariant_id: str
    outcome: InvariantOutcome
    observations: dict[str, Any]
    judgements: tuple[Judgement, ...]
    duration: float
    seed: int
    message: str = ""  # why FAIL/ERROR/SKIP, one line
    logs: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir
    artifacts: tuple[str, ...] = ()
    metrics: tuple[dict[str, Any], ...] = ()

    def first_failure(self) -> Judgement | None:
        return next((j for j in self.judgements if not j.ok), None)


@dataclass(frozen=True, slots=True)
class FalsifierResult:
    falsifier_id: str
    target: str
    kind: str
    outcome: FalsifierOutcome
    duration: float
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # counterexample, fault report...
    logs: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WaiverResult:
    """A criterion's waiver as a run applied it (``"waiver"`` in results.json)."""

    owner: str
    reason: str
    link: str
    expires: str
    status: WaiverStatus

    def to_dict(self) -> dict[str, str]:
        return _encode(self)

    def note(self) -> str:
        """One line saying what the waiver did, for every report."""
        if self.status is WaiverStatus.ACTIVE:
            return f"waived until {self.expires} by {self.owner}: {self.reason} ({self.link})"
        if self.status is WaiverStatus.EXPIRED:
            return f"waiver expired on {self.expires} ({self.owner}: {self.reason}, {self.link})"
        return f"waiver unused: the criterion is GO (remove it: {self.owner}, {self.link})"


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """``verdict`` is the criterion's own verdict, waiver or not; ``label`` is how
    it is reported (``WAIVED`` while a waiver holds for a criterion that is not GO)."""

    criterion_id: str
    title: str
    severity: str
    verdict: Verdict
    reasons: tuple[str, ...]
    invariants: tuple[InvariantResult, ...]
    falsifiers: tuple[FalsifierResult, ...]
    location: Location
    duration: float = 0.0
    waiver: WaiverResult | None = None

    @property
    def waived(self) -> bool:
        """Not GO, and a waiver holds: reported WAIVED, blocks nothing."""
        return self.waiver is not None and self.waiver.status is WaiverStatus.ACTIVE

    @property
    def label(self) -> str:
        """The verdict as reports show it: WAIVED, or the criterion's own verdict."""
        return WAIVED if self.waived else self.verdict.value


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    verdict: Verdict  # the release verdict over blocker criteria
    criteria: tuple[CriterionResult, ...]
    seed: int
    started: str
    finished: str
    profile: str = "full"
    contract_digest: str = ""
    tool_version: str = ""
    interrupted: bool = False
    evidence_dir: str = ""
    schema_version: int = RESULTS_SCHEMA_VERSION
    fail_on: str = FailOn.UNPROVEN.value  # the gate the run was judged by (``--fail-on``)
    # check ID -> CPU seconds, as the executor measured it (``Executor.cpu_seconds``)
    check_cpu: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Criteria per reported verdict: a waived criterion counts as WAIVED only
        (never as GO, nor as its own verdict), so the counts add up to the criteria."""
        out = {v.value: 0 for v in Verdict}
        out[WAIVED] = 0
        for c in self.criteria:
            out[c.label] += 1
        return out

    def summary_line(self) -> str:
        counts = self.counts()
        n = len(self.criteria)
        parts = [
            f"{counts[v.value]} {v.value}"
            for v in Verdict
            if counts[v.value] or v in (Verdict.GO, Verdict.NO_GO, Verdict.UNPROVEN)
        ]
        if counts[WAIVED]:
            parts.append(f"{counts[WAIVED]} {WAIVED}")
        noun = "criterion" if n == 1 else "criteria"
        return f"{n} {noun}: " + ", ".join(parts)

    # -- JSON round trip ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _encode(self)
        for c in data["criteria"]:
            if c.get("waiver") is None:
                c.pop("waiver", None)  # optional: results without waivers read as before
        if not data["check_cpu"]:
            del data["check_cpu"]  # optional: unmeasured (the inline executor)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        version = data.get("schema_version")
        if version != RESULTS_SCHEMA_VERSION:
            raise ValueError(
                f"results schema_version {version!r} is not supported "
                f"(this harness reads version {RESULTS_SCHEMA_VERSION})"
            )
        crits = tuple(_criterion_from(c) for c in data["criteria"])
        kw = {k: v for k, v in data.items() if k not in ("criteria", "verdict")}
        return cls(verdict=Verdict(data["verdict"]), criteria=crits, **kw)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _encode(obj: Any) -> Any:
    """JSON-ready copy: dataclasses become dicts of their fields, enums their values,
    tuples lists; what ``dataclasses.asdict`` then an encode gave, in one pass."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    names = _FIELD_NAMES.get(type(obj))
    if names is None and is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELD_NAMES.setdefault(type(obj), tuple(f.name for f in fields(obj)))
    if names is not None:
        return {name: _encode(getattr(obj, name)) for name in names}
    return copy.deepcopy(obj)


def _criterion_from(d: dict[str, Any]) -> CriterionResult:
    return CriterionResult(
        criterion_id=d["criterion_id"],
        title=d["title"],
        severity=d["severity"],
        verdict=Verdict(d["verdict"]),
        reasons=tuple(d["reasons"]),
        invariants=tuple(_invariant_from(i) for i in d["invariants"]),
        falsifiers=tuple(_falsifier_from(f) for f in d["falsifiers"]),
        location=Location(**d["location"]),
        duration=d.get("duration", 0.0),
        waiver=_waiver_from(d["waiver"]) if d.get("waiver") is not None else None,
    )


def _waiver_from(d: dict[str, Any]) -> WaiverResult:
    return WaiverResult(
        owner=d["owner"],
        reason=d["reason"],
        link=d["link"],
        expires=d["expires"],
        status=WaiverStatus(d["status"]),
    )


def _invariant_from(d: dict[str, Any]) -> InvariantResult:
    return InvariantResult(
        invariant_id=d["invariant_id"],
        outcome=InvariantOutcome(d["outcome"]),
        observations=d["observations"],
        judgements=tuple(Judgement(**j) for j in d["judgements"]),
        duration=d["duration"],
        seed=d["seed"],
        message=d.get("message", ""),
        logs=d.get("logs", {}),
        artifacts=tuple(d.get("artifacts", ())),
        metrics=tuple(d.get("metrics", ())),
    )


def _falsifier_from(d: dict[str, Any]) -> FalsifierResult:
    return FalsifierResult(
        falsifier_id=d["falsifier_id"],
        target=d["target"],
        kind=d["kind"],
        outcome=FalsifierOutcome(d["outcome"]),
        duration=d["duration"],
        message=d.get("message", ""),
        detail=d.get("detail", {}),
        logs=d.get("logs", {}),
        artifacts=tuple(d.get("artifacts", ())),
    )
