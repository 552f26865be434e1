"""``harness lint``: validate contracts without running them.

Schema, unique IDs, references, bindings (the callable imports, the pytest
node id is collected, the program is on PATH), falsifier targets and
strategies, every invariant attacked by at least one falsifier, and no
skeleton ``TODO`` left in a field.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.bindings import (
    BindingError,
    import_dotted,
    resolve_command,
    resolve_pytest,
    resolve_python,
)
from harness.errors import ContractError, Diagnostic
from harness.falsify.faults import INJECTORS
from harness.loader import load_each
from harness.model import Contract, Location

TODO = re.compile(r"\bTODO\b")


def _diag(
    loc: Location, message: str, keypath: str = "", hint: str = "", severity: str = "error"
) -> Diagnostic:
    return Diagnostic(loc.file, loc.line, loc.col, message, keypath, hint, severity)


def lint_paths(
    paths: Iterable[Path], root: Path, allowed: Sequence[str] = (), resolve: bool = True
) -> tuple[list[Contract], list[Diagnostic]]:
    """Every problem of the contracts under ``paths`` (errors and warnings)."""
    try:
        contracts, diags = load_each(paths)
    except ContractError as exc:  # a path that does not exist
        return [], exc.diagnostics
    diags.extend(_todos(contracts))
    diags.extend(_falsifier_coverage(contracts))
    if resolve:
        diags.extend(_bindings(contracts, root, allowed))
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
                    node_ids.setdefault(inv.check.target, []).append(inv.location)
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
            for dotted in _falsifier_names(f.kind, f.spec):
                try:
                    import_dotted(dotted, allowed if f.kind != "fault" else ())
                except BindingError as exc:
                    out.append(
                        _diag(
                            f.location,
                            f"{f.id}: {exc}",
                            f"{f.id}.{f.kind}",
                            "name an importable module:attribute",
                        )
                    )
            if f.kind == "fault":
                name = f.spec.get("injector", "")
                if ":" not in name and name not in INJECTORS:
                    out.append(
                        _diag(
                            f.location,
                            f"{f.id}: unknown injector '{name}'",
                            f"{f.id}.fault.injector",
                            "one of " + ", ".join(sorted(INJECTORS)),
                        )
                    )
    for node, problem in resolve_pytest(sorted(node_ids), root).items():
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


def _falsifier_names(kind: str, spec: dict[str, object]) -> list[str]:
    if kind == "mutant":
        patch = spec.get("patch", {})
        assert isinstance(patch, dict)
        return [*patch.keys(), *patch.values()]
    if kind == "property":
        return [str(spec["strategy"])]
    if kind == "fault" and ":" in str(spec.get("injector", "")):
        return [str(spec["injector"])]
    return []
