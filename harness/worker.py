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
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.evaluate import evaluate, make_context
from harness.falsify import run_falsifier
from harness.model import FalsifierResult, InvariantResult
from harness.plan import CheckCall, Task, result_of


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


def execute_task(task: Task) -> InvariantResult | FalsifierResult:
    """Run one task to completion (in the current process)."""
    if task.root not in sys.path:
        sys.path.insert(0, task.root)
    check_dir = Path(task.check_dir)
    with captured_output(check_dir):
        call: CheckCall[InvariantResult | FalsifierResult] = CheckCall.from_call(
            lambda: _run_falsifier(task) if task.falsifier else _run_invariant(task)
        )
    return result_of(task, call, log_paths(check_dir))


def _run_falsifier(task: Task) -> InvariantResult | FalsifierResult:
    return run_falsifier(task)


def _run_invariant(task: Task) -> InvariantResult:
    ctx = make_context(task)
    outcome, judgements, message, observations = evaluate(task, ctx)
    return InvariantResult(
        task.invariant.id,
        outcome,
        _jsonable(observations),
        judgements,
        0.0,  # the call's duration is filled in by result_of
        task.seed,
        message,
        {},
        tuple(ctx.artifacts),
        tuple(ctx.metrics),
    )


def failure_result(task: Task, message: str, duration: float) -> InvariantResult | FalsifierResult:
    """The ERROR result of a task that crashed, timed out or could not start."""
    return result_of(task, CheckCall.failed(message, duration), log_paths(Path(task.check_dir)))


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
