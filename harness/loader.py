"""Load contracts: safe YAML -> JSON Schema -> the data model, with locations.

Every problem becomes a ``Diagnostic`` (file:line:col, key path, hint); a
file with problems raises ``ContractError`` carrying all of them.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import hashlib
import heapq
import json
import reprlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import ContractError, Diagnostic
from harness.model import (
    Check,
    Contract,
    ContractSet,
    Criterion,
    Expectation,
    Falsifier,
    Invariant,
    Location,
    Service,
    Waiver,
)
from harness.services import PLACEHOLDERS, placeholders
from harness.yamlsrc import Positions, YamlSourceError, load_yaml, number_spelling

SCHEMA_FILE = "contract-v1.json"
CONTRACT_SUFFIXES = (".yaml", ".yml")
MAX_ERRORS_PER_FILE = 20  # then one line: "... and N more errors in FILE"
MAX_MESSAGE_CHARS = 300  # one diagnostic quotes at most this much of a value

WAIVER_FORM = "waiver: {owner: NAME, reason: WHY, link: https://..., expires: YYYY-MM-DD}"
_WAIVER_HINTS = {
    "owner": "owner: who answers for the waiver",
    "reason": "reason: why the failure is accepted for now",
    "link": "link: the http(s):// address of the issue that tracks the failure",
    "expires": "expires: a date, YYYY-MM-DD (e.g. 2027-01-31), the first day it no longer holds",
}

_COMPARISONS = {"<=": "le", ">=": "ge", "==": "eq", "!=": "ne", "<": "lt", ">": "gt"}
_WAIVER_PATTERNS = {
    "owner": "must not be empty",
    "reason": "must not be empty",
    "link": "is not an http:// or https:// address",
    "expires": "is not a date written YYYY-MM-DD",
}

_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 60, 60, 5, 5


@functools.cache
def contract_schema() -> dict[str, Any]:
    text = resources.files("harness").joinpath("schema", SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(contract_schema())


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def keypath_text(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def discover(paths: Iterable[Path]) -> list[Path]:
    """Contract files under the given files or directories, sorted, deduplicated."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                sorted(
                    q
                    for q in p.rglob("*")
                    if q.suffix in CONTRACT_SUFFIXES and q.is_file() and not q.name.startswith(".")
                )
            )
        elif p.is_file():
            found.append(p)
        else:
            raise ContractError(
                [
                    Diagnostic(
                        display_path(p),
                        1,
                        1,
                        "no such file or directory",
                        hint="check the path or [tool.harness] contracts",
                    )
                ]
            )
    seen: set[Path] = set()
    unique = []
    for f in found:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique


# --------------------------------------------------------------------------- schema errors


def _waiver_hint(path: tuple[Any, ...], key: str = "") -> str:
    """What to write in a criterion's waiver: the field's own hint, else the form."""
    i = path.index("waiver")
    field = key or (str(path[i + 1]) if len(path) > i + 1 else "")
    return _WAIVER_HINTS.get(field, f"write {WAIVER_FORM}")


def _comparison_hint(name: str, value: Any) -> str:
    """How to write an observation's thresholds as a comparison mapping: a scalar
    where ``{eq: 0}`` was meant, or a comparison written as text (``<= 0.5``)."""
    if isinstance(value, str):
        for text, op in sorted(_COMPARISONS.items(), key=lambda kv: -len(kv[0])):
            rest = value.strip()[len(text) :].strip()
            if value.strip().startswith(text) and rest:
                return f"write a comparison mapping: {name}: {{{op}: {rest}}}"
    shown = json.dumps(value) if value is None or isinstance(value, (bool, str)) else value
    if isinstance(value, str) and number_spelling(value) is not None:
        shown = number_spelling(value)
    if isinstance(value, (list, dict)):
        shown = "VALUE"
    return (
        f"write a comparison mapping: {name}: {{eq: {shown}}} "
        "(comparators: eq ne le lt ge gt approx in matches)"
    )


def _type_hint(path: tuple[Any, ...], expected: Any, instance: Any) -> str:
    """What to write instead of a value of the wrong type, where it is clear."""
    wanted = expected if isinstance(expected, list) else [expected]
    if isinstance(instance, str) and {"number", "integer"} & set(wanted):
        fixed = number_spelling(instance)
        if fixed is not None:
            return (
                f"YAML 1.1 reads {instance} as text: write {fixed} "
                "(a dot in the number, a sign in the exponent)"
            )
    if "waiver" in path:
        return _waiver_hint(path)
    if "object" in wanted and len(path) >= 2 and path[-2] == "expect":
        return _comparison_hint(str(path[-1]), instance)
    if "object" in wanted and path and path[-1] == "expect":
        return "expect maps each observation to comparisons: expect: {loss: {le: 0.5}}"
    return ""


def _schema_diagnostic(file: str, err: Any, pos: Positions) -> Diagnostic:
    path = tuple(err.absolute_path)
    kp = keypath_text(path)
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        key = extra[0] if extra else ""
        line, col = pos.of(path + (key,), key=True)
        near = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"allowed keys: {', '.join(allowed)}"
        if "waiver" in path and not near:
            hint = f"a waiver has exactly these keys: {WAIVER_FORM}"
        return Diagnostic(
            file, line, col, f"unknown key '{key}'", keypath_text(path + (key,)), hint
        )
    line, col = pos.of(path)
    name = f"'{path[-1]}'" if path and isinstance(path[-1], str) else (kp or "document")
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return Diagnostic(
            file,
            line,
            col,
            f"missing required key '{missing}'",
            kp,
            f"add {_waiver_hint(path, missing)}"
            if "waiver" in path
            else "add it (see `harness schema`)",
        )
    if v == "enum":
        opts = ", ".join(str(o) for o in err.validator_value)
        return Diagnostic(
            file, line, col, f"{name} must be one of {opts} (got {_repr.repr(err.instance)})", kp
        )
    if v == "const":
        return Diagnostic(
            file,
            line,
            col,
            f"{name} must be {err.validator_value!r} (got {_repr.repr(err.instance)})",
            kp,
        )
    if v == "type":
        return Diagnostic(
            file,
            line,
            col,
            f"{name} must be of type {err.validator_value} "
            f"(got {type(err.instance).__name__} {_repr.repr(err.instance)})",
            kp,
            _type_hint(path, err.validator_value, err.instance),
        )
    if v == "pattern":
        hint = ""
        if path and path[-1] == "id":
            hint = "IDs look like AC-AREA-001, INV-AREA-001, FALSIFY-AREA-001"
        elif "python" in path or "strategy" in path or "patch" in path:
            hint = "write a dotted module path, a colon, then the name: pkg.module:function"
        elif len(path) == 3 and path[0] == "services" and path[2] == "ready":
            hint = "a URL path from the root, like /ready or /health?deep=1 (a space is %20)"
        elif "waiver" in path:
            hint = _waiver_hint(path)
            what = _WAIVER_PATTERNS.get(str(path[-1]), "")
            if what:
                shown = "" if err.validator_value == r"\S" else f" {_repr.repr(err.instance)}"
                return Diagnostic(file, line, col, f"{name}{shown} {what}", kp, hint)
        return Diagnostic(
            file,
            line,
            col,
            f"{name} {_repr.repr(err.instance)} does not match {err.validator_value}",
            kp,
            hint,
        )
    if v == "oneOf" and path and path[-1] == "check":
        return Diagnostic(
            file,
            line,
            col,
            "a check needs exactly one of 'python', 'pytest', 'command'",
            kp,
            "python: pkg.module:function  |  pytest: tests/x.py::test_y  |  command: [prog, arg]",
        )
    if v == "minItems" or v == "minProperties":
        return Diagnostic(file, line, col, f"{name} must not be empty", kp)
    if v == "dependentRequired":
        return Diagnostic(
            file, line, col, _clip(err.message), kp, "'rel' and 'abs' are tolerances for 'approx'"
        )
    return Diagnostic(file, line, col, _clip(err.message), kp)


def _one_line(d: Diagnostic) -> Diagnostic:
    """A diagnostic prints on one line, however strange the keys and values it quotes."""
    return dataclasses.replace(
        d, message=_clip(d.message), keypath=_clip(d.keypath), hint=_clip(d.hint)
    )


def _clip(message: str) -> str:
    one_line = " ".join(message.split())
    if len(one_line) <= MAX_MESSAGE_CHARS:
        return one_line
    return one_line[: MAX_MESSAGE_CHARS - 1] + "…"


# --------------------------------------------------------------------------- one file


def load_contract(path: Path) -> Contract:
    """Load and validate one contract file. Raises ContractError with locations."""
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ContractError(
            [
                Diagnostic(
                    shown,
                    1,
                    1,
                    f"cannot read file: {exc.strerror}",
                    hint="check the path and its permissions",
                )
            ]
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(
            [Diagnostic(shown, 1, 1, "file is not valid UTF-8", hint="save it as UTF-8")]
        ) from exc
    try:
        data, pos = load_yaml(text)
    except YamlSourceError as exc:
        raise ContractError(
            [Diagnostic(shown, exc.line, exc.col, exc.message, hint=exc.hint)]
        ) from exc
    if not isinstance(data, dict):
        raise ContractError(
            [
                Diagnostic(
                    shown,
                    1,
                    1,
                    "a contract must be a YAML mapping",
                    hint="start with 'version: 1' and 'contract: {name: ..., title: ...}'",
                )
            ]
        )
    diags = _schema_diagnostics(shown, data, pos) or _date_diagnostics(shown, data, pos)
    if diags:
        raise ContractError(diags)
    return _build(path, shown, raw, text, data, pos)


def _date_diagnostics(shown: str, data: dict[str, Any], pos: Positions) -> list[Diagnostic]:
    """A waiver's ``expires`` that has the schema's YYYY-MM-DD form but is no date."""
    out = []
    for i, c in enumerate(data.get("criteria", [])):
        expires = c.get("waiver", {}).get("expires")
        try:
            if expires is not None:
                datetime.date.fromisoformat(expires)
        except ValueError as exc:
            at = ("criteria", i, "waiver", "expires")
            out.append(
                Diagnostic(
                    shown,
                    *pos.of(at),
                    f"'expires' {expires!r} is not a date ({exc})",
                    keypath_text(at),
                    _WAIVER_HINTS["expires"],
                )
            )
    return out


def _schema_diagnostics(shown: str, data: Any, pos: Positions) -> list[Diagnostic]:
    """The first ``MAX_ERRORS_PER_FILE`` schema errors in source order, then a count
    of the rest. Only a few error objects are kept, however many the file has."""
    total = 0

    def counted() -> Iterable[Any]:
        nonlocal total
        for err in _validator().iter_errors(data):
            total += 1
            yield err

    first = heapq.nsmallest(
        4 * MAX_ERRORS_PER_FILE, counted(), key=lambda e: pos.of(tuple(e.absolute_path))
    )
    diags = _dedupe([_one_line(_schema_diagnostic(shown, e, pos)) for e in first])
    out = diags[:MAX_ERRORS_PER_FILE]
    more = len(diags) - len(out) + total - len(first)
    if more > 0:
        out.append(_more(shown, out[-1], more, more))
    return out


def cap_diagnostics(
    diags: Sequence[Diagnostic], limit: int = MAX_ERRORS_PER_FILE
) -> list[Diagnostic]:
    """At most ``limit`` diagnostics per file, in the order given (pass them sorted
    by position), each on one line, then one line per file saying how many more
    there are."""
    out: list[Diagnostic] = []
    shown: dict[str, int] = {}
    rest: dict[str, list[Diagnostic]] = {}
    for d in diags:
        if shown.get(d.file, 0) < limit:
            shown[d.file] = shown.get(d.file, 0) + 1
            out.append(_one_line(d))
        else:
            rest.setdefault(d.file, []).append(d)
    for file, more in rest.items():
        out.append(_more(file, more[0], sum(d.severity == "error" for d in more), len(more)))
    return out


def _more(file: str, at: Diagnostic, errors: int, n: int) -> Diagnostic:
    what = "error" if errors == n else ("warning" if errors == 0 else "problem")
    return Diagnostic(
        file,
        at.line,
        at.col,
        f"… and {n} more {what}{'s' if n != 1 else ''} in {file}",
        hint=f"only the first {MAX_ERRORS_PER_FILE} of a file are shown; fix them and lint again",
        severity="error" if errors else "warning",
    )


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for d in diags:
        k = (d.line, d.col, d.message)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def _build(
    path: Path, shown: str, raw: bytes, text: str, data: dict[str, Any], pos: Positions
) -> Contract:
    def loc(p: tuple[Any, ...]) -> Location:
        line, col = pos.of(p)
        return Location(shown, line, col)

    criteria = tuple(
        Criterion(
            id=c["id"],
            title=c["title"],
            severity=c["severity"],
            invariants=tuple(c["invariants"]),
            references=tuple(c["references"]),
            location=loc(("criteria", i)),
            statement=c.get("statement", ""),
            owner=c.get("owner", ""),
            tags=tuple(c.get("tags", ())),
            declared=c,
            waiver=_waiver(c.get("waiver"), loc(("criteria", i, "waiver", "expires"))),
        )
        for i, c in enumerate(data.get("criteria", []))
    )
    meta = data["contract"]
    services = tuple(
        Service(
            name=name,
            contract=meta["name"],
            command=tuple(str(a) for a in svc["command"]),
            location=loc(("services", name)),
            ready=svc.get("ready"),
            env=tuple((str(k), str(v)) for k, v in (svc.get("env") or {}).items()),
            start_timeout=float(svc.get("start_timeout", 60)),
            stop_timeout=float(svc.get("stop_timeout", 20)),
        )
        for name, svc in (data.get("services") or {}).items()
    )
    by_name = {s.name: s for s in services}
    invariants = []
    for i, inv in enumerate(data.get("invariants", [])):
        chk = inv["check"]
        kind = next(k for k in ("python", "pytest", "command") if k in chk)
        target = tuple(chk[kind]) if kind == "command" else chk[kind]
        expect = tuple(
            Expectation(name, dict(comps), loc(("invariants", i, "expect", name)))
            for name, comps in inv["expect"].items()
        )
        invariants.append(
            Invariant(
                id=inv["id"],
                title=inv["title"],
                check=Check(kind, target, dict(chk.get("params", {}))),
                expect=expect,
                timeout=inv.get("timeout"),
                location=loc(("invariants", i)),
                statement=inv.get("statement", ""),
                tags=tuple(inv.get("tags", ())),
                declared=inv,
                services=tuple(by_name[n] for n in inv.get("services", ()) if n in by_name),
            )
        )
    falsifiers = tuple(
        Falsifier(
            id=f["id"],
            title=f["title"],
            kind=f["kind"],
            target=f["target"],
            spec=dict(f.get(f["kind"], {})),
            location=loc(("falsifiers", i)),
            timeout=f.get("timeout"),
            slow=bool(f.get("slow", False)),
            declared=f,
        )
        for i, f in enumerate(data.get("falsifiers", []))
    )
    return Contract(
        name=meta["name"],
        title=meta["title"],
        path=shown,
        sha256=hashlib.sha256(raw).hexdigest(),
        text=text,
        criteria=criteria,
        invariants=tuple(invariants),
        falsifiers=falsifiers,
        owner=meta.get("owner", ""),
        description=meta.get("description", ""),
        services=services,
    )


def _waiver(declared: dict[str, str] | None, at: Location) -> Waiver | None:
    if declared is None:
        return None
    return Waiver(declared["owner"], declared["reason"], declared["link"], declared["expires"], at)


def load_files(paths: Iterable[Path]) -> tuple[list[Contract], list[Diagnostic]]:
    """Each contract file under ``paths`` on its own: those that load, and the
    diagnostics of those that do not (at most ``MAX_ERRORS_PER_FILE`` each, then a count)."""
    contracts: list[Contract] = []
    diags: list[Diagnostic] = []
    for f in discover(paths):
        try:
            contracts.append(load_contract(f))
        except ContractError as exc:
            diags.extend(exc.diagnostics)
    return contracts, diags


# --------------------------------------------------------------------------- the set


def load_each(paths: Iterable[Path]) -> tuple[list[Contract], list[Diagnostic]]:
    """Every contract under ``paths`` that loads, and the diagnostics of the set:
    each file's own problems plus the cross-file ones (IDs, references)."""
    contracts, diags = load_files(paths)
    across = sorted(cross_check(contracts), key=lambda d: (d.file, d.line, d.col))
    return contracts, diags + cap_diagnostics(across)


def load_contract_set(paths: Iterable[Path]) -> ContractSet:
    """Load every contract under ``paths`` and check the set as a whole."""
    contracts, diags = load_each(paths)
    if any(d.severity == "error" for d in diags):
        raise ContractError(diags)
    digest = hashlib.sha256(
        "\n".join(f"{c.path}\0{c.sha256}" for c in sorted(contracts, key=lambda c: c.path)).encode()
    ).hexdigest()
    return ContractSet(tuple(contracts), digest)


def cross_check(contracts: Sequence[Contract]) -> list[Diagnostic]:
    """IDs unique across the set; every reference resolves."""
    diags: list[Diagnostic] = []
    first: dict[str, Location] = {}
    names: dict[str, str] = {}
    for k in contracts:
        if k.name in names:
            diags.append(
                Diagnostic(
                    k.path,
                    1,
                    1,
                    f"contract name '{k.name}' is also used by {names[k.name]}",
                    "contract.name",
                    "give each contract its own name",
                )
            )
        names.setdefault(k.name, k.path)
        for item in k.items():
            if item.id in first:
                where = first[item.id]
                diags.append(
                    Diagnostic(
                        item.location.file,
                        item.location.line,
                        item.location.col,
                        f"duplicate ID {item.id} (first defined at {where})",
                        "id",
                        "IDs must be unique across all contracts; "
                        "`harness new` picks the next free one",
                    )
                )
            else:
                first[item.id] = item.location
    invariant_ids = {i.id for k in contracts for i in k.invariants}
    for k in contracts:
        diags.extend(_service_diagnostics(k))
    for k in contracts:
        for c in k.criteria:
            for ref in c.invariants:
                if ref not in invariant_ids:
                    diags.append(_unresolved(c.location, c.id, ref, invariant_ids))
        for f in k.falsifiers:
            if f.target not in invariant_ids:
                diags.append(_unresolved(f.location, f.id, f.target, invariant_ids))
    return diags


def _service_diagnostics(k: Contract) -> list[Diagnostic]:
    """Every service an invariant names is declared in its contract; a service's
    command and env use only the placeholders the harness fills in."""
    diags = []
    known = {s.name for s in k.services}
    for inv in k.invariants:
        for name in inv.declared.get("services", ()):
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=1)
                hint = (
                    f"did you mean {near[0]}?"
                    if near
                    else "declare it under `services:` at the top of this contract"
                )
                diags.append(
                    Diagnostic(
                        inv.location.file,
                        inv.location.line,
                        inv.location.col,
                        f"{inv.id} uses service '{name}', which {k.path} does not declare",
                        f"{inv.id}.services",
                        hint,
                    )
                )
    for svc in k.services:
        for text in (*svc.command, *(v for _, v in svc.env)):
            for field_name in placeholders(text):
                if field_name not in PLACEHOLDERS:
                    diags.append(
                        Diagnostic(
                            svc.location.file,
                            svc.location.line,
                            svc.location.col,
                            f"service '{svc.name}': unknown placeholder {{{field_name}}} in "
                            f"{text!r}",
                            f"services.{svc.name}",
                            "the harness fills in {python}, {port} and {dir}; write {{ for a "
                            "literal brace",
                        )
                    )
    return diags


def _unresolved(loc: Location, owner: str, ref: str, known: set[str]) -> Diagnostic:
    near = difflib.get_close_matches(ref, sorted(known), n=1)
    hint = f"did you mean {near[0]}?" if near else "define the invariant or fix the ID"
    return Diagnostic(
        loc.file,
        loc.line,
        loc.col,
        f"{owner} refers to {ref}, which no contract defines",
        owner,
        hint,
    )
