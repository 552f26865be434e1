"""Call one check and judge what it observed: the step every task shares.

An invariant's own run, a mutant, each example of a property search and a fault
all come down to ``evaluate(task, make_context(task, ...))``. Thresholds come
from the YAML (``task.invariant.expect``), never from the check.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from harness.bindings import call_check
from harness.context import CheckContext
from harness.errors import SkipCheck
from harness.judge import judge_observations
from harness.model import InvariantOutcome, Judgement
from harness.plan import Task


def make_context(
    task: Task,
    params: dict[str, Any] | None = None,
    fault: Any = None,
    scratch_name: str = "scratch",
) -> CheckContext:
    """The check's context: the invariant's params (overridden by ``params``), the
    task's seed, a scratch folder and an artifact folder under the task's own dir."""
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
) -> tuple[InvariantOutcome, tuple[Judgement, ...], str, dict[str, Any]]:
    """Call the check and judge it: (outcome, judgements, message, observations).

    A check that raises is ERROR (its traceback goes to its stderr log); one that
    calls ``ctx.skip`` is SKIP, never a pass."""
    try:
        observations = call_check(task.invariant.check, ctx, task.allowed)
    except SkipCheck as exc:
        return InvariantOutcome.SKIP, (), exc.reason, {}
    except Exception as exc:
        sys.stderr.write(traceback.format_exc(limit=8))
        return InvariantOutcome.ERROR, (), f"{type(exc).__name__}: {exc}", {}
    outcome, judgements, message = judge_observations(task.invariant.expect, observations)
    return outcome, tuple(judgements), message, observations
