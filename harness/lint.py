"""``harness lint``: validate contracts without running them.

Schema, unique IDs, references, bindings (the callable imports, the pytest
node id is collected, the program is on PATH), falsifier targets and
strategies, every invariant attacked by at least one falsifier, and no
skeleton ``TODO`` left in a field. Warnings: a waiver past its expiry date.

Lint runs no code the contracts name outside the allowed packages: every
dotted name (check, mutant target and replacement, property strategy, fault
injector) is checked by ``harness.bindings`` before its module is imported,
and a pytest file outside the root or the allowed packages is never collected.
A file shows at most ``MAX_ERRORS_PER_FILE`` problems, then a count.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.bindings import (
    BindingError,
    BindingRefused,
    pytest_file,
    resolve_allowed,
    resolve_command,
    resolve_patch_target,
    resolve_pytest,
    resolve_python,
)
from harness.errors import ContractError, Diagnostic
from harness.falsify.faults import INJECTORS, injector_class
from harness.judge import today_utc
from harness.loader import cap_diagnostics, cross_check, load_files
from harness.model import Contract, Falsifier, Location

TODO = re.compile(r"\bTODO\b")


def _diag(
    loc: Location, message: str, keypath: str = "", hint: str = "", severity: str = "error"
) -> Diagnostic:
    return Diagnostic(loc.file, loc.line, loc.col, message, keypath, hint, severity)


def lint_paths(
    paths: Iterable[Path],
    root: Path,
    allowed: Sequence[str] = (),
    resolve: bool = True,
    today: datetime.date | None = None,
) -> tuple[list[Contract], list[Diagnostic]]:
    """Every problem of the contracts under ``paths`` (errors and warnings).
    ``today`` (default: today, UTC) is the date waivers are judged by."""
    try:
        contracts, diags = load_files(paths)  # each file that does not load: capped already
    except ContractError as exc:  # a path that does not exist
        return [], exc.diagnostics
    found = cross_check(contracts) + _todos(contracts) + _falsifier_coverage(contracts)
    found += _expired_waivers(contracts, today or today_utc())
    if resolve:
        found.extend(_bindings(contracts, root, allowed))
    found.sort(key=lambda d: (d.file, d.line, d.col))
    diags.extend(cap_diagnostics(found))
    diags.sort(key=lambda d: (d.file, d.line, d.col))
    return contracts, diags


def _todos(contracts: Sequence[Contract]) -> list[Diagnostic]:
    out = []
    for k in contracts:
        for n, line in enumerate(k.text.splitlines(), 1):
            if TODO.search(line) and not line.lstrip().startswith("#"):
                out.append(
                    Diagnostic(
                        k.path,
                        n,
                        line.find("TODO") + 1,
                        "skeleton field still says TODO",
                        "",
                        "fill it in (see CONTRIBUTING.md)",
                    )
                )
    return out


def _falsifier_coverage(contracts: Sequence[Contract]) -> list[Diagnostic]:
    targets = {f.target for k in contracts for f in k.falsifiers}
    return [
        _diag(
            i.location,
            f"{i.id} has no falsifier: nothing shows its check can go red",
            i.id,
            "add a mutant, property or fault falsifier with target: " + i.id,
        )
        for k in contracts
        for i in k.invariants
        if i.id not in targets
    ]


def _expired_waivers(contracts: Sequence[Contract], today: datetime.date) -> list[Diagnostic]:
    """A waiver past its date no longer holds: its criterion blocks again when it is
    not GO. A warning (lint has no strict mode): the run is what fails."""
    return [
        _diag(
            c.waiver.location or c.location,
            f"{c.id}'s waiver expired on {c.waiver.expires}: the criterion blocks again "
            "when it is not GO",
            f"{c.id}.waiver.expires",
            f"fix the failure and remove the waiver, or (with {c.waiver.owner}) "
            "set a new expires date",
            severity="warning",
        )
        for k in contracts
        for c in k.criteria
        if c.waiver is not None and c.waiver.expired(today)
    ]


def _bindings(
    contracts: Sequence[Contract], root: Path, allowed: Sequence[str]
) -> list[Diagnostic]:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    out: list[Diagnostic] = []
    node_ids: dict[str, list[Location]] = {}
    for k in contracts:
        for inv in k.invariants:
            try:
                if inv.check.kind == "python":
                    assert isinstance(inv.check.target, str)
                    resolve_python(inv.check.target, allowed)
                elif inv.check.kind == "command":
                    resolve_command(tuple(inv.check.target), root)
                else:
                    assert isinstance(inv.check.target, str)
                    pytest_file(inv.check.target, root, allowed)  # before anything collects it
                    node_ids.setdefault(inv.check.target, []).append(inv.location)
            except BindingRefused as exc:
                out.append(
                    _diag(inv.location, f"{inv.id}: binding refused: {exc}", f"{inv.id}.check")
                )
            except BindingError as exc:
                out.append(
                    _diag(
                        inv.location,
                        f"{inv.id}: binding does not resolve: {exc}",
                        f"{inv.id}.check",
                        "fix the module path or install the program",
                    )
                )
        for f in k.falsifiers:
            out.extend(_falsifier_bindings(f, allowed))
    for node, problem in resolve_pytest(sorted(node_ids), root, allowed).items():
        for loc in node_ids[node]:
            out.append(
                _diag(
                    loc,
                    f"binding does not resolve: {problem}",
                    "check.pytest",
                    "run `pytest --collect-only -q` to see the node ids",
                )
            )
    return out


def _falsifier_bindings(f: Falsifier, allowed: Sequence[str]) -> list[Diagnostic]:
    """Each dotted name a falsifier gives, resolved as the worker will resolve it."""
    out: list[Diagnostic] = []

    def refuse(exc: Exception, key: str, hint: str) -> None:
        hint = "" if isinstance(exc, BindingRefused) else hint  # the message says what to do
        out.append(_diag(f.location, f"{f.id}: {exc}", f"{f.id}.{f.kind}.{key}", hint))

    if f.kind == "mutant":
        patch = f.spec.get("patch", {})
        for target, replacement in patch.items() if isinstance(patch, dict) else ():
            try:
                resolve_patch_target(str(target), allowed, "mutant target")
            except BindingError as exc:
                refuse(exc, "patch", "name an existing module:attribute of an allowed package")
            try:
                resolve_allowed(str(replacement), allowed, "mutant replacement")
            except BindingError as exc:
                refuse(exc, "patch", "name an importable module:attribute")
    elif f.kind == "property":
        try:
            resolve_allowed(str(f.spec.get("strategy", "")), allowed, "property strategy")
        except BindingError as exc:
            refuse(exc, "strategy", "name an importable module:attribute")
    elif f.kind == "fault":
        name = str(f.spec.get("injector", ""))
        try:
            injector_class(name, allowed)
        except KeyError:
            refuse(
                BindingError(f"unknown injector '{name}'"),
                "injector",
                "one of " + ", ".join(sorted(INJECTORS)) + ", or module:Class of an Injector",
            )
        except (BindingError, ValueError) as exc:
            refuse(exc, "injector", "name an Injector subclass as module:Class")
    return out
