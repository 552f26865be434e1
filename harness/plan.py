"""What a run will do, decided before anything runs: profiles, tasks, seeds, the plan.

This module sits just above the data model: the hooks, the worker, the
executor, the runner and the evidence writer all import it, and it imports
nothing of theirs. It also holds the two events an executor sends back to the
runner (``CheckStarted``, ``CheckDone``) and ``Observed``, the plain data a
worker returns for a task: the coordinator alone turns it into a result.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ContractError, Diagnostic, NothingSelected
from harness.model import (
    ContractSet,
    Criterion,
    Falsifier,
    FalsifierOutcome,
    FalsifierResult,
    Invariant,
)
from harness.procs import looks_secret
from harness.sources import MAX_SOURCES, source_name

SCRATCH = "scratch"  # a check's scratch folder, inside its check dir
SCRATCH_ENV = "HARNESS_SCRATCH"  # names that folder for the check (and its commands)


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


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


MAX_SIZE = 1024**5  # no limit is larger than a PiB


def parse_size(value: Any, what: str = "size") -> int:
    """``4GiB``, ``512MB``, ``1000000`` -> bytes. ValueError names ``what``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIZE:
        return value
    text = str(value).strip().lower().replace(" ", "")
    num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(num) :]
    try:
        n = float(num)
    except ValueError:
        n = -1.0
    if unit not in _UNITS or not n > 0 or not math.isfinite(n):
        raise ValueError(f"{what}: {value!r} is not a size (e.g. 512MiB, 4GiB or a byte count)")
    size = int(n * _UNITS[unit])
    if size > MAX_SIZE:
        raise ValueError(f"{what}: {value!r} is more than {MAX_SIZE // 1024**4} TiB")
    return size


@dataclass(frozen=True, slots=True)
class Limits:
    """What one check may use; the wall time is ``Task.timeout``."""

    memory: int | None = 8 * 1024**3  # bytes of address space (RLIMIT_AS); None: none
    output: int = 10 * 1024**2  # bytes of each of stdout/stderr kept in the evidence

    def merged(self, declared: Any, where: str) -> Limits:
        """These limits overridden by an invariant's ``limits:`` block."""
        if not isinstance(declared, dict) or not declared:
            return self
        memory, output = self.memory, self.output
        if "memory" in declared:
            m = declared["memory"]
            memory = None if m in (None, "none", "unlimited") else parse_size(m, f"{where}.memory")
        if "output" in declared:
            output = parse_size(declared["output"], f"{where}.output")
        return Limits(memory, output)


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
    options: dict[str, Any] = field(default_factory=dict)  # e.g. hypothesis db dir, replays
    env: dict[str, str] = field(default_factory=dict)  # variables passed on top of the base env
    limits: Limits = field(default_factory=Limits)

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
    limits: Limits | None = None,
    environ: Mapping[str, str] | None = None,
    approved_env: Sequence[str] = (),
    check_env: Mapping[str, str] | None = None,
) -> Plan:
    """The tasks of a run. ``environ`` is where an invariant's ``pass-env`` names
    are looked up (the coordinator's environment); a name that looks secret must
    also match ``approved_env`` (``[tool.harness] pass-env``), so a contract in a
    pull request cannot ask for the CI's secrets. ``limits`` are the defaults
    that an invariant's ``limits:`` block overrides.

    A task's ``env``, set in its worker on top of the scrubbed base environment:
    first ``check_env`` (``[tool.harness] check-env``, ``{scratch}`` replaced by
    the task's scratch folder), then the invariant's ``pass-env`` values (which
    win), then ``HARNESS_SCRATCH``, the scratch folder itself."""
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
        names = list(inv.declared.get("pass-env") or ())
        refused = [
            n
            for n in names
            if looks_secret(n) and not any(fnmatch.fnmatchcase(n, a) for a in approved_env)
        ]
        if refused:
            raise ContractError(
                [
                    Diagnostic(
                        inv.location.file,
                        inv.location.line,
                        inv.location.col,
                        f"{inv.id}: pass-env names {', '.join(refused)}, which looks like a "
                        "secret; a contract may pass a secret only if [tool.harness] pass-env "
                        "in pyproject.toml lists it too",
                    )
                ]
            )
        scratch = str(checks_dir / key / SCRATCH)
        env = {n: v.replace("{scratch}", scratch) for n, v in (check_env or {}).items()}
        env.update({n: (environ or {})[n] for n in names if n in (environ or {})})
        env[SCRATCH_ENV] = scratch
        try:
            task_limits = (limits or Limits()).merged(inv.declared.get("limits"), "limits")
        except ValueError as exc:
            raise ContractError(
                [
                    Diagnostic(
                        inv.location.file, inv.location.line, inv.location.col, f"{inv.id}: {exc}"
                    )
                ]
            ) from None
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
                options=dict(options or {}),
                env=env,
                limits=task_limits,
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


def longest_first(tasks: Sequence[Task], durations: Mapping[str, float]) -> list[Task]:
    """``tasks`` in the order to start them: those of unknown duration first (in plan
    order: they may be long), then the others, longest first (``durations``: seconds
    by task key, e.g. from the previous run). With more tasks than workers, starting
    the long ones first keeps one of them from being the last to start."""
    unknown = [t for t in tasks if t.key not in durations]
    known = [t for t in tasks if t.key in durations]
    known.sort(key=lambda t: -durations[t.key])  # stable: ties keep plan order
    return unknown + known


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class CheckStarted:
    """An executor handed ``task`` to a worker."""

    task: Task


@dataclass(frozen=True, slots=True)
class CheckDone:
    """``task`` finished (or crashed, or timed out): ``observed`` is what came back,
    not yet judged: only the coordinator judges."""

    task: Task
    observed: Observed
    logs: dict[str, str] = field(default_factory=dict)  # "stdout"/"stderr" -> file path
    # what the executor itself says of the run (never the worker), e.g. "harness.retry":
    # the runner records each under the result's observations (a falsifier's detail)
    notes: dict[str, str] = field(default_factory=dict)


ExecutorEvent = CheckStarted | CheckDone


# --------------------------------------------------------------------------- observed

STATUSES = ("returned", "skipped", "raised", "failed")
MAX_MESSAGE = 4000  # characters of a worker's message kept
MAX_DEPTH = 32  # nesting of an observation


@dataclass(frozen=True, slots=True)
class Observed:
    """What a worker sends back for one task: raw facts, never an outcome.

    It crosses the process boundary as plain JSON (``to_wire``/``from_wire``),
    never as a pickle: a check is untrusted, and the coordinator validates what
    arrives and judges it against the YAML (``harness.judge.judge_task``).

    ``status``: ``returned`` (the check returned observations), ``skipped`` (it
    called ``ctx.skip``), ``raised`` (it raised, or returned something that is not
    plain data), ``failed`` (it never returned: a crash, a timeout, a limit, or
    the falsifier machinery broke). ``extra`` holds what a falsifier kind reports
    (a mutant's ``applied``, a fault's ``injected``, a search's ``examples``).
    ``sources`` names the project's Python source files loaded in the worker's
    process (``harness.sources.loaded_sources``): names only, which the
    coordinator digests itself.
    """

    status: str
    message: str = ""
    observations: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    metrics: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    sources: tuple[str, ...] = ()

    @classmethod
    def failed(cls, message: str, duration: float = 0.0) -> Observed:
        return cls("failed", message, duration=duration)

    def to_wire(self) -> bytes:
        data = {
            "status": self.status,
            "message": self.message,
            "observations": self.observations,
            "artifacts": list(self.artifacts),
            "metrics": list(self.metrics),
            "extra": self.extra,
            "duration": self.duration,
            "sources": list(self.sources),
        }
        return json.dumps(data, default=_refuse).encode()

    @classmethod
    def from_wire(cls, data: bytes) -> Observed:
        """Parse and validate a worker's reply; ValueError says what is wrong."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"a {type(raw).__name__}, not an object")
        unknown = set(raw) - {
            "status",
            "message",
            "observations",
            "artifacts",
            "metrics",
            "extra",
            "duration",
            "sources",
        }
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        status = raw.get("status")
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        message = raw.get("message", "")
        observations = raw.get("observations", {})
        artifacts = raw.get("artifacts", [])
        metrics = raw.get("metrics", [])
        extra = raw.get("extra", {})
        duration = raw.get("duration", 0.0)
        sources = raw.get("sources", [])
        if not isinstance(message, str):
            raise ValueError("message is not a string")
        if not isinstance(observations, dict):
            raise ValueError("observations is not an object")
        if not isinstance(extra, dict):
            raise ValueError("extra is not an object")
        if not isinstance(artifacts, list) or not all(
            isinstance(a, str) and safe_name(a) for a in artifacts
        ):
            raise ValueError("artifacts is not a list of relative file names")
        if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
            raise ValueError("metrics is not a list of objects")
        if (
            not isinstance(duration, (int, float))
            or isinstance(duration, bool)
            or not math.isfinite(duration)
            or duration < 0
        ):
            raise ValueError("duration is not a non-negative number")
        if (
            not isinstance(sources, list)
            or len(sources) > MAX_SOURCES
            or not all(source_name(s) for s in sources)
        ):
            raise ValueError(
                f"sources is not a list of at most {MAX_SOURCES} relative .py file names"
            )
        if _depth(raw) > MAX_DEPTH + 4:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        return cls(
            status,
            message[:MAX_MESSAGE],
            observations,
            tuple(artifacts),
            tuple(metrics),
            extra,
            float(duration),
            tuple(sorted(set(sources))),
        )


def reported_cpu(value: Any) -> float | None:
    """A CPU time as another process reported it (a fork server's ``exited``, a Dask
    reply): a finite number of seconds >= 0, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9:
        return float(value)
    return None


def safe_name(name: str) -> bool:
    """A relative path inside a folder: no absolute path, no '..', no empty part."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _refuse(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__name__} is not plain data")


def _depth(x: Any, level: int = 0) -> int:
    if level > MAX_DEPTH + 8:
        return level
    if isinstance(x, dict):
        return max((_depth(v, level + 1) for v in x.values()), default=level + 1)
    if isinstance(x, list):
        return max((_depth(v, level + 1) for v in x), default=level + 1)
    return level


def to_plain(value: Any, where: str = "value", level: int = 0) -> Any:
    """``value`` as plain data (None, bool, int, float, str, lists, string-keyed
    dicts): NumPy scalars become numbers, arrays and tuples become lists. Anything
    else raises TypeError naming ``where``."""
    if level > MAX_DEPTH:
        raise TypeError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__name__ == "bool_":
        return bool(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == () and callable(value.item):
        return to_plain(value.item(), where, level)
    if hasattr(value, "tolist") and callable(value.tolist) and hasattr(value, "shape"):
        return to_plain(value.tolist(), where, level)
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]", level + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} that is not a string")
            out[k] = to_plain(v, f"{where}.{k}", level + 1)
        return out
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, not plain data "
        "(numbers, strings, booleans, lists, mappings)"
    )
