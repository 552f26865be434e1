"""Resolve and call the three kinds of check binding: python, pytest, command.

``resolve_*`` run at lint time (nothing is executed); ``call_check`` runs in
a worker and returns the observations dict.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.context import CheckContext
from harness.errors import HarnessError, SkipCheck
from harness.model import Check


class BindingError(HarnessError):
    """A binding does not resolve (bad module, missing function, missing program)."""


def import_dotted(target: str, allowed: Sequence[str] = ()) -> Any:
    """``pkg.module:attr.sub`` -> the object. Raises BindingError with the reason."""
    if ":" not in target:
        raise BindingError(f"'{target}' is not of the form module:name")
    mod_name, _, attr = target.partition(":")
    if allowed and not any(mod_name == a or mod_name.startswith(a + ".") for a in allowed):
        raise BindingError(
            f"module '{mod_name}' is outside the allowed packages "
            f"({', '.join(allowed)}); add it to [tool.harness] allowed-packages"
        )
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise BindingError(f"cannot import module '{mod_name}': {exc}") from exc
    except Exception as exc:  # an import that crashes is a broken binding
        raise BindingError(f"importing '{mod_name}' raised {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BindingError(f"module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def resolve_python(target: str, allowed: Sequence[str] = ()) -> None:
    fn = import_dotted(target, allowed)
    if not callable(fn):
        raise BindingError(f"'{target}' is not callable")


def resolve_command(argv: Sequence[str], root: Path) -> None:
    prog = argv[0]
    if os.sep in prog:
        path = (root / prog) if not os.path.isabs(prog) else Path(prog)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BindingError(f"program '{prog}' is not an executable file")
    elif shutil.which(prog) is None:
        raise BindingError(f"program '{prog}' is not on PATH")


def resolve_pytest(node_ids: Sequence[str], root: Path) -> dict[str, str]:
    """Collect the node ids in a subprocess; map each missing one to the reason."""
    if not node_ids:
        return {}
    files = sorted({n.split("::")[0] for n in node_ids})
    missing_files = {f for f in files if not (root / f).exists()}
    problems = {
        n: f"test file '{n.split('::')[0]}' does not exist"
        for n in node_ids
        if n.split("::")[0] in missing_files
    }
    present = [f for f in files if f not in missing_files]
    if present:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                str(root),
                *present,
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        collected = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
        for n in node_ids:
            if n in problems:
                continue
            if (
                "::" in n
                and n not in collected
                and not any(c.startswith(n + "[") or c.startswith(n + "::") for c in collected)
            ):
                problems[n] = f"pytest collects no test '{n}'"
    return problems


# --------------------------------------------------------------------------- calling


def call_check(check: Check, ctx: CheckContext, allowed: Sequence[str] = ()) -> dict[str, Any]:
    if check.kind == "python":
        assert isinstance(check.target, str)
        fn = import_dotted(check.target, allowed)
        result = fn(ctx)
        if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
            raise TypeError(
                f"check {check.target} returned {type(result).__name__}; "
                "a check must return a dict of observations"
            )
        return result
    if check.kind == "pytest":
        assert isinstance(check.target, str)
        return _call_pytest(check.target, ctx)
    return _call_command(tuple(check.target), ctx)


class _Collector:
    def __init__(self) -> None:
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.skipped:
                self.counts["skipped"] += 1
            elif report.failed:
                self.counts["failed" if report.when == "call" else "error"] += 1
            elif report.passed:
                self.counts["passed"] += 1


def _call_pytest(node_id: str, ctx: CheckContext) -> dict[str, Any]:
    import pytest

    collector = _Collector()
    args = [str(ctx.root / node_id), "-q", "-p", "no:cacheprovider", "--rootdir", str(ctx.root)]
    code = int(pytest.main(args, plugins=[collector]))
    c = collector.counts
    ran = c["passed"] + c["failed"] + c["error"]
    if ran == 0 and c["skipped"]:
        raise SkipCheck(f"pytest skipped {node_id}")
    if ran == 0:
        raise RuntimeError(f"pytest ran no test for {node_id} (exit code {code})")
    outcome = "passed" if code == 0 else ("failed" if c["failed"] else "error")
    return {
        "exit_code": code,
        "outcome": outcome,
        "passed": c["passed"],
        "failed": c["failed"],
        "errors": c["error"],
        "skipped": c["skipped"],
    }


def _call_command(argv: tuple[str, ...], ctx: CheckContext) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        HARNESS_SEED=str(ctx.seed),
        HARNESS_SCRATCH=str(ctx.scratch),
        HARNESS_PARAMS=json.dumps(ctx.params),
    )
    proc = subprocess.run(list(argv), cwd=ctx.root, env=env, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    observations: dict[str, Any] = {"exit_code": proc.returncode}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if lines:
        try:
            last = json.loads(lines[-1])
        except ValueError:
            last = None
        if isinstance(last, dict):
            observations.update({str(k): v for k, v in last.items() if k != "exit_code"})
    return observations
