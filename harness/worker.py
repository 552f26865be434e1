"""What runs inside a worker process: one task in, one result out.

A task is an invariant's check, or a falsifier attacking one. The worker
captures stdout/stderr at the file-descriptor level into the task's check
directory, calls the binding, judges the observations (thresholds come from
the YAML, never from the check) and returns a picklable result. A check that
raises is ERROR; a check that kills the interpreter or hangs is turned into
ERROR by the executor with ``failure_result``.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.context import CheckContext
from harness.errors import SkipCheck
from harness.judge import judge_observations
from harness.model import (
    Falsifier,
    FalsifierOutcome,
    FalsifierResult,
    Invariant,
    InvariantOutcome,
    InvariantResult,
)


@dataclass(frozen=True, slots=True)
class Task:
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


def derive_seed(run_seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{key}".encode()).digest()[:4], "big")


@contextmanager
def captured_output(check_dir: Path) -> Any:
    """Send fd 1 and 2 (Python and C level) to files in ``check_dir``."""
    check_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    py_streams = sys.stdout, sys.stderr
    with open(check_dir / "stdout.txt", "ab") as out, open(check_dir / "stderr.txt", "ab") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        # Python-level writes go to the same files even if sys.stdout was replaced
        sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
        faulthandler.enable(file=sys.stderr)  # a crash leaves its traceback in stderr.txt
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = py_streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_paths(check_dir: Path) -> dict[str, str]:
    """The check's non-empty logs, as the evidence stores them: relative to its
    criterion's folder (``logs/<ID>.stdout.txt``)."""
    key = check_dir.name
    out = {}
    for name in ("stdout", "stderr"):
        f = check_dir / f"{name}.txt"
        if f.exists() and f.stat().st_size > 0:
            out[name] = f"logs/{key}.{name}.txt"
    return out


def make_context(
    task: Task,
    params: dict[str, Any] | None = None,
    fault: Any = None,
    scratch_name: str = "scratch",
) -> CheckContext:
    check_dir = Path(task.check_dir)
    merged = dict(task.invariant.check.params)
    if params:
        merged.update(params)
    return CheckContext(
        merged,
        task.seed,
        check_dir / scratch_name,
        check_dir / "artifacts",
        task.invariant.id,
        fault=fault,
        root=Path(task.root),
    )


def evaluate(
    task: Task, ctx: CheckContext
) -> tuple[InvariantOutcome, tuple[Any, ...], str, dict[str, Any]]:
    """Call the check and judge it: (outcome, judgements, message, observations)."""
    from harness.bindings import call_check

    try:
        observations = call_check(task.invariant.check, ctx, task.allowed)
    except SkipCheck as exc:
        return InvariantOutcome.SKIP, (), exc.reason, {}
    except Exception as exc:
        tb = traceback.format_exc(limit=8)
        sys.stderr.write(tb)
        return InvariantOutcome.ERROR, (), f"{type(exc).__name__}: {exc}", {}
    outcome, judgements, message = judge_observations(task.invariant.expect, observations)
    return outcome, judgements, message, observations


def execute_task(task: Task) -> InvariantResult | FalsifierResult:
    """Run one task to completion (in the current process)."""
    if task.root not in sys.path:
        sys.path.insert(0, task.root)
    check_dir = Path(task.check_dir)
    start = time.perf_counter()
    with captured_output(check_dir):
        if task.falsifier is None:
            ctx = make_context(task)
            outcome, judgements, message, observations = evaluate(task, ctx)
            return InvariantResult(
                task.invariant.id,
                outcome,
                _jsonable(observations),
                judgements,
                time.perf_counter() - start,
                task.seed,
                message,
                log_paths(check_dir),
                tuple(ctx.artifacts),
                tuple(ctx.metrics),
            )
        from falsifiers.engine import run_falsifier

        result: InvariantResult | FalsifierResult
        try:
            result = run_falsifier(task)
        except Exception as exc:  # the falsifier machinery itself broke: ERROR, never a pass
            sys.stderr.write(traceback.format_exc(limit=8))
            result = failure_result(task, f"{type(exc).__name__}: {exc}", 0.0)
    return _with(result, time.perf_counter() - start, log_paths(check_dir))


def _with(
    result: InvariantResult | FalsifierResult, duration: float, logs: dict[str, str]
) -> InvariantResult | FalsifierResult:
    import dataclasses

    return dataclasses.replace(result, duration=duration, logs=logs)


def failure_result(task: Task, message: str, duration: float) -> InvariantResult | FalsifierResult:
    """The ERROR result of a task that crashed, timed out or could not start."""
    logs = log_paths(Path(task.check_dir))
    if task.falsifier is None:
        return InvariantResult(
            task.invariant.id, InvariantOutcome.ERROR, {}, (), duration, task.seed, message, logs
        )
    f = task.falsifier
    return FalsifierResult(
        f.id, f.target, f.kind, FalsifierOutcome.ERROR, duration, message, logs=logs
    )


def _jsonable(obs: dict[str, Any]) -> dict[str, Any]:
    """Numpy scalars and the like become plain Python values."""
    out: dict[str, Any] = {}
    for k, v in obs.items():
        if hasattr(v, "item") and callable(v.item) and getattr(v, "shape", None) == ():
            v = v.item()
        elif hasattr(v, "tolist") and callable(v.tolist):
            v = v.tolist()
        out[k] = v
    return out
