"""``harness init`` and ``harness new``: start contracts fast, lose nothing.

Every contract file the tool writes starts with a yaml-language-server line
pointing at the JSON Schema, so editors complete and validate keys. A file the
tool edits (``pyproject.toml``, ``.gitignore``, a contract) keeps its mode.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ContractError, UsageError
from harness.fsutil import atomic_write_text
from harness.loader import contract_schema, load_contract
from harness.model import Contract

SCHEMA_NAME = "contract.schema.json"
PREFIX = {"criterion": "AC", "invariant": "INV", "falsifier": "FALSIFY"}
SECTION = {"criterion": "criteria", "invariant": "invariants", "falsifier": "falsifiers"}
FALSIFIER_KINDS = ("mutant", "property", "fault")
#: what ``harness init`` adds to .gitignore: run bundles, and the local search database
IGNORED = (".harness/",)
#: folders at a project root that are never the project's package
NOT_PACKAGES = {"contracts", "evidence", "build", "dist", "docs", "site-packages", "node_modules"}


def schema_header(contract_file: Path) -> str:
    return f"# yaml-language-server: $schema=./{SCHEMA_NAME}\n"


EXAMPLE = """{header}version: 1
contract:
  name: example
  title: Example contract written by `harness init`
  owner: {owner}

criteria:
  - id: AC-EXAMPLE-001
    title: The project ships a README
    statement: A new user finds a README at the top of the repository.
    severity: warn
    owner: {owner}
    references: ["harness init example; replace with the document this criterion comes from"]
    tags: [docs]
    invariants: [INV-EXAMPLE-001]

invariants:
  - id: INV-EXAMPLE-001
    title: README.md exists and is not empty
    check:
      python: harness.checks.files:files_exist
      params: {{paths: [README.md], min_bytes: 1}}
    expect:
      missing: {{eq: 0}}

falsifiers:
  - id: FALSIFY-EXAMPLE-001
    title: A README that does not exist must be reported missing
    kind: mutant
    target: INV-EXAMPLE-001
    mutant:
      params: {{paths: [README.md, no-such-file-anywhere.md]}}
"""

PYPROJECT_TABLE = """
[tool.harness]
contracts = ["contracts"]
evidence-dir = "evidence"
default-timeout = 600
"""
ALLOWED_COMMENT = "# python bindings (checks, mutants, strategies, injectors) must live in these"


def write_schema(folder: Path) -> Path:
    path = folder / SCHEMA_NAME
    atomic_write_text(path, json.dumps(contract_schema(), indent=2) + "\n", durable=False)
    return path


# --------------------------------------------------------------------------- init


def init_project(root: Path, owner: str) -> list[str]:
    """Set up contracts/, [tool.harness] and .gitignore in ``root``; returns what was done."""
    done: list[str] = []
    contracts = root / "contracts"
    contracts.mkdir(parents=True, exist_ok=True)
    write_schema(contracts)
    done.append(f"wrote {contracts / SCHEMA_NAME}")
    example = contracts / "example.yaml"
    if example.exists():
        done.append(f"kept existing {example}")
    else:
        atomic_write_text(example, EXAMPLE.format(header=schema_header(example), owner=owner))
        done.append(f"wrote {example}")
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.exists() else ""
    packages = project_packages(root, text)
    allowed = ["harness", *packages]  # harness: the example's check
    if re.search(r"^\[tool\.harness\]", text, re.M):
        done.append(f"kept existing [tool.harness] in {pyproject}")
        if "allowed-packages" not in _harness_table(text) and packages:
            done.append(
                f"note: [tool.harness] has no allowed-packages, so contracts may name any "
                f"importable module; consider allowed-packages = {_toml_list(allowed)}"
            )
    else:
        table = PYPROJECT_TABLE
        if packages:
            table += f"{ALLOWED_COMMENT}\nallowed-packages = {_toml_list(allowed)}\n"
        else:
            table += (
                f"{ALLOWED_COMMENT} (set it once you have one)\n"
                f'# allowed-packages = ["harness", "your_package"]\n'
            )
        sep = "" if not text or text.endswith("\n") else "\n"
        atomic_write_text(pyproject, text + sep + table.lstrip("\n" if not text else ""))
        if packages:
            done.append(
                f"added [tool.harness] to {pyproject}, allowed-packages {_toml_list(allowed)}"
            )
        else:
            done.append(
                f"added [tool.harness] to {pyproject}; no package of yours found, so "
                "allowed-packages is left commented out (until it is set, contracts may "
                "name any importable module)"
            )
    configured = _harness_table(pyproject.read_text(encoding="utf-8")).get("evidence-dir")
    evidence = root / (configured if isinstance(configured, str) else "evidence")
    evidence.mkdir(parents=True, exist_ok=True)
    done.append(ignore_outputs(root, evidence))
    return done


def _harness_table(text: str) -> dict[str, object]:
    try:
        table = tomllib.loads(text).get("tool", {}).get("harness", {})
    except tomllib.TOMLDecodeError:
        return {}
    return table if isinstance(table, dict) else {}


def _toml_list(names: list[str]) -> str:
    return "[" + ", ".join(json.dumps(n) for n in names) + "]"


def project_packages(root: Path, pyproject_text: str = "") -> list[str]:
    """The project's own importable packages: folders with an ``__init__.py`` at the
    root or under ``src/``, else the ``[project] name`` of pyproject.toml as a module
    name; then ``tests`` when there is such a folder (pytest bindings live there).
    Empty when no package of the project's is found."""
    tests = ("tests", "test")
    found: list[str] = []
    for base in (root, root / "src"):
        for d in sorted(base.iterdir()) if base.is_dir() else ():
            if (
                d.is_dir()
                and d.name.isidentifier()
                and d.name not in (*NOT_PACKAGES, *tests, *found)
                and (d / "__init__.py").is_file()
            ):
                found.append(d.name)
    if not found:
        try:
            name = tomllib.loads(pyproject_text).get("project", {}).get("name")
        except tomllib.TOMLDecodeError:
            name = None
        module = re.sub(r"[-.]+", "_", str(name or "")).lower()
        found = [module] if module.isidentifier() else []
    if not found:
        return []
    return found + [t for t in tests if (root / t).is_dir()]


def _covers(pattern: str, name: str) -> bool:
    """Whether a .gitignore line ignores the folder ``name`` at the root."""
    p = pattern.strip()
    if not p or p.startswith(("#", "!")):
        return False
    for suffix in ("/**", "/*", "/"):
        p = p.removesuffix(suffix)
    return p.lstrip("/") == name or p == f"**/{name}"


def ignore_outputs(root: Path, evidence: Path) -> str:
    """Append the evidence folder and ``.harness/`` to ``root/.gitignore`` unless it
    already ignores them (idempotent; the file keeps its mode)."""
    wanted = list(IGNORED)
    try:
        wanted.insert(0, evidence.resolve().relative_to(root.resolve()).as_posix() + "/")
    except ValueError:  # an evidence folder outside the project: not ours to ignore
        pass
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    missing = [w for w in wanted if not any(_covers(ln, w.rstrip("/")) for ln in lines)]
    if not missing:
        return f"kept {path} (it ignores {', '.join(wanted)} already)"
    sep = "" if not text or text.endswith("\n") else "\n"
    block = "# harness: run bundles and its local search database\n" + "\n".join(missing)
    atomic_write_text(path, text + sep + ("\n" if text else "") + block + "\n")
    return f"added {', '.join(missing)} to {path}"


# --------------------------------------------------------------------------- new

_ID = r"(?:AC|INV|FALSIFY)-[A-Z0-9]+(?:-[A-Z0-9]+)*"
ID_DEF = re.compile(rf"^\s*-?\s*id:\s*['\"]?({_ID})\b", re.M)
TARGET = re.compile(r"^\s*target:\s*['\"]?(INV-[A-Z0-9]+(?:-[A-Z0-9]+)*)\b", re.M)


@dataclass
class NewItems:
    """What ``new_item`` wrote: the IDs added and a line per wiring decision."""

    path: Path
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _area(path: Path, text: str) -> str:
    m = re.search(r"\b(?:AC|INV|FALSIFY)-([A-Z0-9]+(?:-[A-Z0-9]+)*?)-\d+\b", text)
    if m:
        return m.group(1)
    return re.sub(r"[^A-Z0-9]+", "-", path.stem.upper()).strip("-") or "NEW"


def next_id(kind: str, area: str, taken: set[str]) -> str:
    n = 1
    while f"{PREFIX[kind]}-{area}-{n:03d}" in taken:
        n += 1
    return f"{PREFIX[kind]}-{area}-{n:03d}"


def skeleton(kind: str, new_id: str, link: str = "", falsifier_kind: str = "mutant") -> list[str]:
    """The YAML lines of a new item; ``link`` is the invariant a criterion lists or a
    falsifier targets."""
    if kind == "criterion":
        return [
            f"- id: {new_id}",
            "  title: TODO what a release manager signs off",
            "  statement: TODO one or two sentences",
            "  severity: blocker",
            "  owner: TODO team",
            '  references: ["TODO document and line this comes from"]',
            f"  invariants: [{link}]",
        ]
    if kind == "invariant":
        return [
            f"- id: {new_id}",
            "  title: TODO one falsifiable statement",
            "  check:",
            "    python: TODO.module:function",
            "    params: {}",
            "  expect:",
            "    TODO_observation: {eq: true}",
        ]
    body = {
        "mutant": [
            "  title: TODO the known-bad variant this check must catch",
            "  kind: mutant",
            f"  target: {link}",
            "  mutant:",
            '    patch: {"TODO.module:name": "TODO.module:bad_name"}',
        ],
        "property": [
            "  title: TODO the inputs searched for a counterexample",
            "  kind: property",
            f"  target: {link}",
            '  property: {strategy: "TODO.module:strategy", max_examples: 100}',
            "  slow: false",
        ],
        "fault": [
            "  title: TODO the fault the invariant must hold under",
            "  kind: fault",
            f"  target: {link}",
            "  fault: {injector: TODO_injector, params: {}}",
        ],
    }[falsifier_kind]
    return [f"- id: {new_id}", *body]


class _ContractSetText:
    """The contract being edited and the text of every other contract file."""

    def __init__(self, path: Path) -> None:
        from harness.config import load_config
        from harness.loader import discover

        self.path = path
        self.contract: Contract | None = None
        if path.exists():
            self.contract = load_contract(path)  # refuse to edit a file that is already broken
            self.text = path.read_text(encoding="utf-8")
        else:
            name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-") or "contract"
            self.text = (
                f"{schema_header(path)}version: 1\ncontract:\n  name: {name}\n"
                f"  title: TODO what this contract covers\n"
            )
        self.others: dict[Path, str] = {}
        cfg = load_config(path.parent)
        for f in discover([p for p in cfg.contracts if p.exists()]):
            if f.resolve() != path.resolve():
                self.others[f] = f.read_text(encoding="utf-8")

    def taken(self) -> set[str]:
        texts = [self.text, *self.others.values()]
        return {i for t in texts for i in re.findall(rf"\b{_ID}\b", t)}

    def invariants(self) -> list[str]:
        """Every invariant defined in the set, this file's first."""
        here = [i.id for i in self.contract.invariants] if self.contract else []
        there = [i for t in self.others.values() for i in ID_DEF.findall(t)]
        return here + [i for i in there if i.startswith("INV-") and i not in here]

    def unlisted(self) -> list[str]:
        """This file's invariants that no criterion lists (none mentions them elsewhere)."""
        if self.contract is None:
            return []
        listed = {i for c in self.contract.criteria for i in c.invariants}
        elsewhere = " ".join(self.others.values())
        return [
            i.id
            for i in self.contract.invariants
            if i.id not in listed and not re.search(rf"\b{re.escape(i.id)}\b", elsewhere)
        ]

    def unattacked(self) -> list[str]:
        """This file's invariants no falsifier of the set targets."""
        if self.contract is None:
            return []
        targets = {f.target for f in self.contract.falsifiers}
        targets |= {t for text in self.others.values() for t in TARGET.findall(text)}
        return [i.id for i in self.contract.invariants if i.id not in targets]


def _known(what: str, wanted: str, known: list[str]) -> None:
    if wanted not in known:
        listing = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "") or "none yet"
        raise UsageError(f"{what} {wanted}: no contract defines it (invariants: {listing})")


def new_item(
    kind: str,
    path: Path,
    *,
    invariants: tuple[str, ...] = (),
    target: str | None = None,
    falsifier_kind: str = "mutant",
) -> NewItems:
    """Append a skeleton with the next free ID to ``path``, wired to what it needs:

    - a criterion lists ``invariants`` (each must be defined), else this file's
      invariants no criterion lists yet, else a new invariant skeleton added with it;
    - a falsifier of ``falsifier_kind`` targets ``target`` (it must be defined), else
      this file's invariant that no falsifier attacks yet, else its only invariant;
    - an invariant is added alone (a criterion then lists it)."""
    if kind not in PREFIX:
        raise UsageError(f"unknown kind {kind!r}: use criterion, invariant or falsifier")
    if falsifier_kind not in FALSIFIER_KINDS:
        raise UsageError(f"--kind {falsifier_kind!r}: use {', '.join(FALSIFIER_KINDS)}")
    if kind != "falsifier" and (target or falsifier_kind != "mutant"):
        raise UsageError("--target and --kind are for a falsifier")
    if kind != "criterion" and invariants:
        raise UsageError("--invariant is for a criterion")
    cs = _ContractSetText(path)
    out = NewItems(path)
    taken = cs.taken()
    area = _area(path, cs.text)
    new_id = next_id(kind, area, taken)
    taken.add(new_id)
    text = cs.text
    also: list[str] = []  # a second item added with the first
    if kind == "criterion":
        for inv in invariants:
            _known("--invariant", inv, cs.invariants())
        links = list(invariants) or cs.unlisted()
        if invariants:
            out.notes.append(f"{new_id} lists {', '.join(links)}")
        elif links:
            out.notes.append(
                f"{new_id} lists {', '.join(links)}, listed by no criterion until now "
                "(--invariant INV-ID to choose)"
            )
        else:
            inv_id = next_id("invariant", area, taken)
            links, also = [inv_id], skeleton("invariant", inv_id)
            out.added.append(inv_id)
            out.notes.append(
                f"{new_id} lists {inv_id}, a new invariant (--invariant INV-ID to list one "
                "you have)"
            )
            out.notes.append(_attack_note(inv_id, path))
        lines = skeleton("criterion", new_id, ", ".join(links))
    elif kind == "falsifier":
        link = target or _default_target(cs)
        _known("--target", link, cs.invariants())
        lines = skeleton("falsifier", new_id, link, falsifier_kind)
        out.notes.append(f"{new_id} ({falsifier_kind}) attacks {link}")
    else:
        lines = skeleton("invariant", new_id)
        out.notes.append(
            f"{new_id} is listed by no criterion yet: `harness new criterion {path} "
            f"--invariant {new_id}` adds one, or add it to a criterion's invariants"
        )
        out.notes.append(_attack_note(new_id, path))
    text = _append_to_section(text, SECTION[kind], lines)
    if also:
        text = _append_to_section(text, SECTION["invariant"], also)
    out.added.insert(0, new_id)
    if not path.exists():
        write_schema(path.parent)
    _write_checked(path, text, cs.text if path.exists() else None)
    return out


def _attack_note(inv_id: str, path: Path) -> str:
    return (
        f"{inv_id} has no falsifier yet: `harness new falsifier {path} --target {inv_id}` "
        "adds one (--kind mutant|property|fault)"
    )


def _default_target(cs: _ContractSetText) -> str:
    free = cs.unattacked()
    if free:
        return free[0]
    mine = [i.id for i in cs.contract.invariants] if cs.contract else []
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UsageError(
            f"{cs.path} has no invariant for a falsifier to attack: pass --target INV-ID, "
            f"or add one first (`harness new invariant {cs.path}`)"
        )
    raise UsageError(
        f"every invariant in {cs.path} has a falsifier already: say which this one attacks "
        f"with --target ({', '.join(mine)})"
    )


def _write_checked(path: Path, updated: str, before: str | None) -> None:
    """Write ``updated``; put ``before`` back (or remove a new file) if it does not load."""
    atomic_write_text(path, updated)
    try:
        load_contract(path)
    except ContractError:  # pragma: no cover - defensive: never leave a broken file
        if before is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_text(path, before)
        raise


def _append_to_section(text: str, section: str, item: list[str]) -> str:
    lines = text.splitlines()
    head = next(
        (i for i, ln in enumerate(lines) if re.match(rf"^{section}:\s*(\[\])?\s*$", ln)), None
    )
    if head is None:
        body = [f"{section}:", *("  " + ln for ln in item)]
        sep = [""] if lines and lines[-1].strip() else []
        return "\n".join([*lines, *sep, *body]) + "\n"
    if lines[head].rstrip().endswith("[]"):
        lines[head] = f"{section}:"
    end = head + 1
    indent = None  # the section's items are indented as its first one
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "#", "-"))):
        m = re.match(r"^(\s*)- ", lines[end])
        if m and indent is None:
            indent = m.group(1)
        end += 1
    while end > head + 1 and not lines[end - 1].strip():
        end -= 1
    new = [(indent if indent is not None else "  ") + ln for ln in item]
    return "\n".join([*lines[:end], *new, *lines[end:]]) + "\n"
