"""``harness lint``: validate contracts without running them.

Schema, unique IDs, references, bindings (the callable imports, the pytest
node id is collected, the program is on PATH), falsifier targets and
strategies, every invariant attacked by at least one falsifier, and no
skeleton ``TODO`` left in a field; in the release policy, every criterion a
target names is one the contracts define (``lint_policy_criteria``).

Warnings, for what loads fine and can only go wrong at run time: a waiver past
its expiry date, an invariant no criterion lists (it never runs), an invariant
with no mutant (it can never be GO), a mutant that patches a name with itself
(or with the same object under another name), a patch mutant of a command check
(the patch cannot reach the command's process), and an unquoted ``1e-6`` that
YAML 1.1 reads as text. Lint has no strict mode: warnings never change its exit code.

Lint runs no code the contracts name outside the allowed packages: every
dotted name (check, mutant target and replacement, property strategy, fault
injector) is checked by ``harness.bindings`` before its module is imported,
and a pytest file outside the root or the allowed packages is never collected.
A file shows at most ``MAX_ERRORS_PER_FILE`` problems, then a count.
"""

from __future__ import annotations

import datetime
import difflib
import importlib.machinery
import importlib.util
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
from harness.judge import overlong_waivers, today_utc
from harness.loader import cap_diagnostics, cross_check, display_path, keypath_text, load_files
from harness.model import MAX_WAIVER_DAYS, Contract, Falsifier, Location, Service
from harness.policy import ReleasePolicy
from harness.yamlsrc import YamlSourceError, load_yaml, number_spelling

TODO = re.compile(r"\bTODO(?:\b|_)")


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
    max_waiver_days: int = MAX_WAIVER_DAYS,
) -> tuple[list[Contract], list[Diagnostic]]:
    """Every problem of the contracts under ``paths`` (errors and warnings).
    ``today`` (default: today, UTC) is the date waivers are judged by, and a waiver
    expiring more than ``max_waiver_days`` after it is an error."""
    try:
        contracts, diags = load_files(paths)  # each file that does not load: capped already
    except ContractError as exc:  # a path that does not exist
        return [], exc.diagnostics
    found = cross_check(contracts) + _todos(contracts) + _falsifier_coverage(contracts)
    found += _expired_waivers(contracts, today or today_utc())
    found += overlong_waivers(
        (c for k in contracts for c in k.criteria), today or today_utc(), max_waiver_days
    )
    found += _unlisted_invariants(contracts) + _never_go(contracts) + _mutants(contracts)
    found += _numbers_read_as_text(contracts)
    if resolve:
        found.extend(_bindings(contracts, root, allowed))
    found.sort(key=lambda d: (d.file, d.line, d.col))
    diags.extend(cap_diagnostics(found))
    diags.sort(key=lambda d: (d.file, d.line, d.col))
    return contracts, diags


def lint_policy_criteria(policy: ReleasePolicy, contracts: Sequence[Contract]) -> list[Diagnostic]:
    """Every criterion a target of the release policy names (``criteria:``) that none of
    ``contracts`` defines, at its line in the policy file: ``harness promote`` to that
    target would refuse it, so lint says so first."""
    known = sorted({c.id for k in contracts for c in k.criteria})
    out = []
    for name, target in policy.targets.items():
        for i, cid in enumerate(target.criteria or ()):
            if cid in known:
                continue
            line, col = target.criteria_at[i] if i < len(target.criteria_at) else (1, 1)
            near = difflib.get_close_matches(cid, known, n=1)
            message = (
                f"targets.{name}.criteria names {cid}, a criterion no contract defines "
                f"(promote --to {name} refuses it)"
            )
            hint = f"did you mean {near[0]}?" if near else "fix the ID or drop it"
            keypath = f"targets.{name}.criteria[{i}]"
            out.append(Diagnostic(display_path(policy.path), line, col, message, keypath, hint))
    return out


#: what each skeleton field of ``harness new`` wants, by its key
TODO_HINTS = {
    "title": "say in one line what this item is",
    "statement": "say in a sentence or two what a release manager signs off",
    "owner": "name the team that answers for it",
    "references": "name the document (and line) this criterion comes from",
    "name": "name the contract (lowercase, dashes)",
    "python": "name your check, a package.module:function that takes ctx and returns a "
    "dict of observations (or use pytest: FILE::TEST or command: [PROG, ARGS])",
    "TODO_observation": "name an observation your check returns and its threshold, "
    "e.g. `loss: {le: 0.5}` (eq ne le lt ge gt approx in matches)",
    "patch": "map the name the code under test looks up to a known-bad version, "
    '{"pkg.module:func": "pkg.mutants:bad_func"}; or run the check on known-bad '
    "params instead: `mutant: {params: {...}}`",
    "property": "name a package.module:function returning a Hypothesis strategy of "
    "params dicts (each example is merged into the invariant's params)",
    "fault": "name an injector: truncate_file, flip_bytes, remove_file, unreadable, sigkill, "
    "fill_disk, set_metadata, or a package.module:Class subclassing harness.falsify.Injector; "
    "the check calls ctx.fault.inject(...)",
}


def _todos(contracts: Sequence[Contract]) -> list[Diagnostic]:
    out = []
    for k in contracts:
        for n, line in enumerate(k.text.splitlines(), 1):
            if TODO.search(line) and not line.lstrip().startswith("#"):
                m = re.match(r"^\s*(?:-\s+)?([A-Za-z_]+)\s*:", line)
                key = m.group(1) if m else ""
                hint = TODO_HINTS.get(key, "replace it (`harness schema` describes every field)")
                out.append(
                    Diagnostic(
                        k.path,
                        n,
                        line.find("TODO") + 1,
                        f"skeleton field{f' {key}' if key else ''} still says TODO",
                        "",
                        hint,
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
            f"add a mutant, property or fault falsifier with target: {i.id} "
            f"(`harness new falsifier {i.location.file} --target {i.id} --kind mutant`)",
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


# --------------------------------------------------------------------------- run-time traps
# What loads fine and can only go wrong when the contracts run: warnings.


def _warn(loc: Location, message: str, keypath: str, hint: str) -> Diagnostic:
    return _diag(loc, message, keypath, hint, severity="warning")


def _unlisted_invariants(contracts: Sequence[Contract]) -> list[Diagnostic]:
    """An invariant no criterion lists never runs: `harness run` runs criteria."""
    listed = {i for k in contracts for c in k.criteria for i in c.invariants}
    return [
        _warn(
            i.location,
            f"{i.id} is listed by no criterion: it never runs",
            i.id,
            f"add {i.id} to a criterion's invariants: [...], or remove it and its falsifiers",
        )
        for k in contracts
        for i in k.invariants
        if i.id not in listed
    ]


def _never_go(contracts: Sequence[Contract]) -> list[Diagnostic]:
    """An invariant attacked only by property searches or faults can never be GO: GO
    needs a KILLED mutant (an invariant with no falsifier at all is an error above)."""
    listed = {i for k in contracts for c in k.criteria for i in c.invariants}
    kinds: dict[str, set[str]] = {}
    for k in contracts:
        for f in k.falsifiers:
            kinds.setdefault(f.target, set()).add(f.kind)
    return [
        _warn(
            i.location,
            f"{i.id} has no mutant, only {' and '.join(sorted(kinds[i.id]))} falsifiers: it can "
            "never be GO (no killed mutant shows its check can go red), so its criterion "
            "stays UNPROVEN",
            i.id,
            f"add a falsifier with kind: mutant and target: {i.id} (mutant: patch: known-bad "
            "code, or mutant: params: a refuting fixture)",
        )
        for k in contracts
        for i in k.invariants
        if i.id in listed and i.id in kinds and "mutant" not in kinds[i.id]
    ]


def _mutants(contracts: Sequence[Contract]) -> list[Diagnostic]:
    """Patch mutants that can never be KILLED: a name patched with itself, or a patch
    of a command check (the patch lives in the worker; the command is another process)."""
    invariants = {i.id: i for k in contracts for i in k.invariants}
    out = []
    for k in contracts:
        for f in k.falsifiers:
            patch = f.spec.get("patch") if f.kind == "mutant" else None
            if not isinstance(patch, dict):
                continue
            never = (  # with params too, only the params can turn the check red
                "the patch changes nothing (only its params can kill it)"
                if "params" in f.spec
                else "the mutant changes nothing and can never be KILLED"
            )
            for target, replacement in patch.items():
                if target == replacement:
                    out.append(
                        _warn(
                            f.location,
                            f"{f.id} patches {target} with itself: {never}",
                            f"{f.id}.mutant.patch",
                            "replace it with a known-bad variant: "
                            f'"{target}": "your_mutants_module:bad_{target.rpartition(":")[2]}"',
                        )
                    )
            inv = invariants.get(f.target)
            if inv is not None and inv.check.kind == "command":
                out.append(
                    _warn(
                        f.location,
                        f"{f.id} patches {', '.join(patch)}, but {inv.id}'s check is a command: "
                        "a patch changes the worker's Python, never the command's process"
                        + (
                            " (only its params can kill it)"
                            if "params" in f.spec
                            else ", so the mutant can never be KILLED"
                        ),
                        f"{f.id}.mutant.patch",
                        "attack a command check with known-bad params (mutant: params: {...}, "
                        "passed as HARNESS_PARAMS), or bind the check as python: module:function",
                    )
                )
    return out


def _numbers_read_as_text(contracts: Sequence[Contract]) -> list[Diagnostic]:
    """An unquoted ``1e-6`` is text to YAML 1.1: a threshold (``eq: 1e-6``) or a param
    (``lr: 1e-3``) that compares or computes as text only fails at run time."""
    out = []
    for k in contracts:
        try:
            _, pos = load_yaml(k.text)
        except YamlSourceError:  # it loaded once; never a crash here
            continue
        for path, text in pos.number_texts.items():
            line, col = pos.of(path)
            out.append(
                Diagnostic(
                    k.path,
                    line,
                    col,
                    f"{text} is read as the text {text!r}, not a number (YAML 1.1 needs a dot "
                    "and a signed exponent)",
                    keypath_text(path),
                    f"write {number_spelling(text)} for the number, or quote it ('{text}') "
                    "if text is meant",
                    "warning",
                )
            )
    return out


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
        for svc in k.services:
            out.extend(_service_command(svc, root))
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


def _service_command(svc: Service, root: Path) -> list[Diagnostic]:
    """A service's program exists; ``{python} -m MODULE`` names a module that is there."""
    argv = svc.command
    where = f"services.{svc.name}.command"
    if argv[0] != "{python}":
        try:
            resolve_command(argv[:1], root)
        except BindingError as exc:
            return [_diag(svc.location, f"service '{svc.name}': {exc}", where,
                          "install the program, or start it with {python}")]  # fmt: skip
        return []
    if len(argv) > 2 and argv[1] == "-m":
        module = argv[2]
        try:
            found = _module_found(module)
        except (ImportError, ValueError) as exc:
            found, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = "not found"
        if not found:
            return [_diag(svc.location, f"service '{svc.name}': module {module!r} {why}", where,
                          "fix the module name (run from the project root)")]  # fmt: skip
    return []


def _module_found(name: str) -> bool:
    """Whether the module ``name`` is there, importing nothing: ``find_spec`` of
    ``pkg.mod`` would run ``pkg/__init__.py``, code of a package that need not be
    an allowed one (lint runs none of those)."""
    parent = name.rpartition(".")[0]
    if not parent or parent in sys.modules:  # nothing left to import to find it
        return importlib.util.find_spec(name) is not None
    parts = name.split(".")
    spec = importlib.util.find_spec(parts[0])  # a top-level name imports nothing
    for i in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return False
        where = list(spec.submodule_search_locations)
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), where)
    return spec is not None


def _holds(owner: object, attr: str, obj: object) -> bool:
    """``owner.attr`` is ``obj`` (False when looking it up again raises anything)."""
    try:
        return getattr(owner, attr) is obj
    except Exception:  # a lookup that worked once and then raises: not lint's to judge
        return False


def _falsifier_bindings(f: Falsifier, allowed: Sequence[str]) -> list[Diagnostic]:
    """Each dotted name a falsifier gives, resolved as the worker will resolve it."""
    out: list[Diagnostic] = []

    def refuse(exc: Exception, key: str, hint: str) -> None:
        hint = "" if isinstance(exc, BindingRefused) else hint  # the message says what to do
        out.append(_diag(f.location, f"{f.id}: {exc}", f"{f.id}.{f.kind}.{key}", hint))

    if f.kind == "mutant":
        patch = f.spec.get("patch", {})
        for target, replacement in patch.items() if isinstance(patch, dict) else ():
            owner: object = None
            try:
                owner, attr = resolve_patch_target(str(target), allowed, "mutant target")
            except BindingError as exc:
                refuse(exc, "patch", "name an existing module:attribute of an allowed package")
            try:
                new = resolve_allowed(str(replacement), allowed, "mutant replacement")
            except BindingError as exc:
                refuse(exc, "patch", "name an importable module:attribute")
                continue
            if owner is not None and target != replacement and _holds(owner, attr, new):
                out.append(
                    _diag(
                        f.location,
                        f"{f.id} patches {target} with {replacement}, the same object: "
                        + (
                            "the patch changes nothing (only its params can kill it)"
                            if "params" in f.spec
                            else "the mutant changes nothing and can never be KILLED"
                        ),
                        f"{f.id}.mutant.patch",
                        "replace it with a known-bad variant defined in a mutants module",
                        severity="warning",
                    )
                )
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
