"""Call one check and record what it observed: the step every task shares.

An invariant's own run, a mutant, each example of a property search and a fault
all come down to ``observe(task, make_context(task, ...))``. Nothing here
decides an outcome: the worker sends the ``Observed`` record to the
coordinator, which judges it against the YAML (``harness.judge.judge_task``).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from harness.bindings import call_check
from harness.context import CheckContext
from harness.errors import SkipCheck
from harness.plan import SCRATCH, Observed, Task, to_plain


def make_context(
    task: Task,
    params: dict[str, Any] | None = None,
    fault: Any = None,
    scratch_name: str = SCRATCH,
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


def observe(task: Task, ctx: CheckContext) -> Observed:
    """Call the check: what it returned (as plain data), or that it skipped or raised.

    A check that raises leaves its traceback in its stderr log; one that returns
    something other than plain data (numbers, strings, booleans, lists, mappings;
    NumPy scalars and arrays are converted) is ``raised``, so judged ERROR."""
    try:
        observations = call_check(task.invariant.check, ctx, task.allowed)
    except SkipCheck as exc:
        return Observed("skipped", exc.reason)
    except Exception as exc:
        sys.stderr.write(traceback.format_exc(limit=8))
        return Observed("raised", f"{type(exc).__name__}: {exc}")
    try:
        plain = to_plain(observations, "observations")
        metrics = to_plain(ctx.metrics, "metrics")
    except TypeError as exc:
        return Observed("raised", f"the check returned data that is not plain: {exc}")
    return Observed("returned", "", plain, tuple(ctx.artifacts), tuple(metrics))
