"""Resolve and call the three kinds of check binding: python, pytest, command.

``resolve_*`` run at lint time (nothing outside the allowed packages is
imported or collected); ``call_check`` runs in a worker and returns the
observations dict.

Allowed packages (``[tool.harness] allowed-packages``; empty allows anything)
are a promise about which code a contract can make the harness run:

- a dotted name ``pkg.module:attr.sub`` is checked before anything is imported,
  every object walked through (``attr``) must itself be allowed, and the object
  it names must be *defined* in an allowed package: a module by its
  ``__name__``, a function, class, method or callable object by its
  ``__module__``. So ``allowed.module:os.system`` and a foreign function
  imported into an allowed module are refused. A plain value (a tuple, a
  strategy object) is allowed when the allowed module or class holding it is;
- a pytest node id names a file inside the project root, and inside an allowed
  package's folder;
- a command is an argv list run as given (no shell); allowed packages do not
  apply to it.

``resolve_allowed`` is the one check for every dotted name a contract gives:
check bindings, mutant patches and replacements, property strategies and
fault injectors, at lint time and again in the worker at run time.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.context import CheckContext
from harness.errors import HarnessError, SkipCheck
from harness.model import Check


class BindingError(HarnessError):
    """A binding does not resolve (bad module, missing function, missing program),
    or names code outside the allowed packages (``BindingRefused``)."""


class BindingRefused(BindingError):
    """A binding names code outside the allowed packages: refused before it is
    imported, collected or called."""


def is_allowed_module(name: str, allowed: Sequence[str]) -> bool:
    """``name`` is one of the ``allowed`` packages or inside one (empty allows all)."""
    return not allowed or any(name == a or name.startswith(a + ".") for a in allowed)


_DEFINED_BY_MODULE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    type,
)


def defining_module(obj: Any) -> str | None:
    """The module that defines ``obj``: a module's own name; a function's, class's
    or method's ``__module__``; for any other object, a ``__module__`` found
    without running its code (its own, else its class's); None when there is none
    (builtin methods of objects, most instances of builtin types)."""
    if isinstance(obj, types.ModuleType):
        name = obj.__dict__.get("__name__")
    elif isinstance(obj, _DEFINED_BY_MODULE):
        name = getattr(obj, "__module__", None)
    else:
        name = inspect.getattr_static(obj, "__module__", None)
    return name if isinstance(name, str) else None


def _holder_module(obj: Any) -> str | None:
    """For an object we are about to look an attribute up on: where its code lives."""
    if isinstance(obj, (types.ModuleType, type)):
        return defining_module(obj)
    return defining_module(type(obj))


def _outside(what: str, dotted: str, why: str, allowed: Sequence[str]) -> BindingRefused:
    return BindingRefused(
        f"{what} '{dotted}' {why}, outside the allowed packages ({', '.join(allowed)}); "
        "name code of an allowed package, or add the package to [tool.harness] allowed-packages"
    )


def _missing(
    what: str, dotted: str, problem: str, verdict: str = "does not resolve"
) -> BindingError:
    if what == "binding":
        return BindingError(problem)
    return BindingError(f"{what} '{dotted}' {verdict}: {problem}")


def _import_allowed(dotted: str, allowed: Sequence[str], what: str) -> tuple[Any, list[str]]:
    """The module of ``dotted`` (checked against ``allowed`` before it is imported)
    and the attribute path after the colon."""
    mod_name, colon, attr = dotted.partition(":")
    if not colon or not mod_name or not attr:
        raise BindingError(f"{what} '{dotted}' is not of the form module:name")
    if not is_allowed_module(mod_name, allowed):
        raise _outside(what, dotted, f"is in module '{mod_name}'", allowed)
    try:
        module: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise _missing(what, dotted, f"cannot import module '{mod_name}': {exc}") from exc
    except Exception as exc:  # an import that crashes is a broken binding
        raise _missing(
            what, dotted, f"importing '{mod_name}' raised {type(exc).__name__}: {exc}"
        ) from exc
    if allowed:
        real = defining_module(module)
        if real is None or not is_allowed_module(real, allowed):
            raise _outside(what, dotted, f"imports as module '{real}'", allowed)
    return module, attr.split(".")


def _walk(
    obj: Any, parts: Sequence[str], dotted: str, allowed: Sequence[str], what: str
) -> tuple[Any, Any]:
    """Follow ``parts`` from ``obj``; with ``allowed``, only through allowed objects.
    Returns (the object holding the last part, the object the last part names)."""
    mod_name, _, attr = dotted.partition(":")
    walked = mod_name
    holder_obj = obj
    for part in parts:
        holder_obj = obj
        if allowed:
            holder = _holder_module(obj)
            if holder is None or not is_allowed_module(holder, allowed):
                raise _outside(
                    what, dotted, f"goes through '{walked}', defined in '{holder}'", allowed
                )
        try:
            found = hasattr(obj, part)
        except Exception as exc:  # a __getattr__ that raises something else
            raise _missing(what, dotted, f"looking up '{part}' raised {exc!r}") from exc
        if not found:
            raise _missing(
                what, dotted, f"module '{mod_name}' has no attribute '{attr}'", "does not exist"
            )
        obj = getattr(obj, part)
        walked += ("." if ":" in walked else ":") + part
    return holder_obj, obj


def resolve_allowed(dotted: str, allowed: Sequence[str] = (), what: str = "binding") -> Any:
    """``pkg.module:attr.sub`` -> the object, if it is code of an allowed package.

    Raises BindingError, saying why, when the name does not resolve or when it
    leads outside ``allowed`` (see the module docstring). Nothing outside
    ``allowed`` is imported. ``what`` names the thing in the message
    ("mutant replacement", "property strategy", "fault injector", ...)."""
    module, parts = _import_allowed(dotted, allowed, what)
    _, obj = _walk(module, parts, dotted, allowed, what)
    if allowed and (callable(obj) or isinstance(obj, types.ModuleType)):
        where = defining_module(obj)
        if where is None or not is_allowed_module(where, allowed):
            why = f"is defined in '{where}'" if where else "has no defining module"
            raise _outside(what, dotted, why, allowed)
    return obj


def resolve_patch_target(
    target: str, allowed: Sequence[str] = (), what: str = "mutant target"
) -> tuple[Any, str]:
    """``pkg.module:attr.sub`` -> (the object holding ``sub``, ``"sub"``): what a mutant
    patch replaces. The holder must be allowed code; what it holds now need not be."""
    module, parts = _import_allowed(target, allowed, what)
    owner, _ = _walk(module, parts, target, allowed, what)  # every holder checked, the last too
    return owner, parts[-1]


def import_dotted(target: str, allowed: Sequence[str] = ()) -> Any:
    """``pkg.module:attr.sub`` -> the object (``resolve_allowed`` for a check binding)."""
    return resolve_allowed(target, allowed, "binding")


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


def pytest_file(node_id: str, root: Path, allowed: Sequence[str] = ()) -> Path:
    """The test file of a pytest node id, checked before anything collects it:
    inside the project root (after resolving ``..`` and symlinks) and, with
    ``allowed``, inside an allowed package's folder (``pkg.sub`` is ``pkg/sub``)."""
    name = node_id.split("::")[0]
    base = Path(os.path.abspath(root)).resolve()
    try:
        path = (base / name).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise BindingError(f"pytest node id {node_id!r} is not a usable path: {exc}") from exc
    if not name or not path.is_relative_to(base):
        raise BindingRefused(
            f"pytest node id '{node_id}' names a file outside the project root {base}; "
            "a node id is a path relative to the root"
        )
    if allowed and not any(path.is_relative_to(d) for d in _package_dirs(allowed, base)):
        raise BindingRefused(
            f"pytest node id '{node_id}' names a file outside the allowed packages "
            f"({', '.join(allowed)}); move the test into one, or add its package to "
            "[tool.harness] allowed-packages"
        )
    return path


def _package_dirs(allowed: Sequence[str], base: Path) -> list[Path]:
    """Where the allowed packages' files are: ``pkg.sub`` under the root as
    ``pkg/sub`` (or ``pkg/sub.py``), and under wherever ``pkg`` is found on the
    import path (a ``src/`` layout). Finding a top-level package imports nothing."""
    dirs: list[Path] = []
    for name in allowed:
        parts = name.split(".")
        roots = [base]
        try:
            spec = importlib.util.find_spec(parts[0])
        except Exception:  # a broken sys.modules entry: the root layout still counts
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.append(Path(location).resolve().parent)
        for r in roots:
            dirs += [r.joinpath(*parts), r.joinpath(*parts[:-1], parts[-1] + ".py")]
    return dirs


def resolve_pytest(
    node_ids: Sequence[str], root: Path, allowed: Sequence[str] = ()
) -> dict[str, str]:
    """Collect the node ids in a subprocess; map each that does not resolve to the
    reason. A file outside the root or the allowed packages is never collected."""
    if not node_ids:
        return {}
    problems: dict[str, str] = {}
    for n in node_ids:
        try:
            pytest_file(n, root, allowed)
        except BindingError as exc:
            problems[n] = str(exc)
    files = sorted({n.split("::")[0] for n in node_ids if n not in problems})
    missing_files = {f for f in files if not (root / f).exists()}
    problems.update(
        {
            n: f"test file '{n.split('::')[0]}' does not exist"
            for n in node_ids
            if n not in problems and n.split("::")[0] in missing_files
        }
    )
    present = [os.path.abspath(root / f) for f in files if f not in missing_files]
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
                os.path.abspath(root),
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
        pytest_file(check.target, ctx.root, allowed)
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
    ctx.scratch  # noqa: B018 - made now: the test may use $HARNESS_SCRATCH, which names it
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


TAIL = 64 * 1024  # bytes at the end of a command's stdout searched for its JSON line


def _call_command(argv: tuple[str, ...], ctx: CheckContext) -> dict[str, Any]:
    """Run a command check. Its stdout goes to a file (never into memory, however
    much it prints), then into the check's log; the last non-empty line, if a JSON
    object, adds observations beside ``exit_code``."""
    env = dict(os.environ)
    env.update(
        HARNESS_SEED=str(ctx.seed),
        HARNESS_SCRATCH=str(ctx.scratch),
        HARNESS_PARAMS=json.dumps(ctx.params),
    )
    out_path = ctx.scratch / ".command.stdout"
    sys.stdout.flush()
    sys.stderr.flush()
    with open(out_path, "w+b") as out:
        proc = subprocess.run(list(argv), cwd=ctx.root, env=env, stdout=out)
        out.seek(0)
        sink = getattr(sys.stdout, "buffer", None)
        while block := out.read(1 << 20):  # into the log, a block at a time
            if sink is not None:
                sink.write(block)
            else:
                sys.stdout.write(block.decode("utf-8", "replace"))
        sys.stdout.flush()
        size = out.tell()
        out.seek(max(0, size - TAIL))
        tail = out.read()
    out_path.unlink(missing_ok=True)
    observations: dict[str, Any] = {"exit_code": proc.returncode}
    lines = [ln for ln in tail.decode("utf-8", "replace").splitlines() if ln.strip()]
    if lines:
        try:
            last = json.loads(lines[-1])
        except ValueError:
            last = None
        if isinstance(last, dict):
            observations.update({str(k): v for k, v in last.items() if k != "exit_code"})
    return observations
