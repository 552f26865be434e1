"""``harness init`` and ``harness new``: start contracts fast, lose nothing.

Every contract file the tool writes starts with a yaml-language-server line
pointing at the JSON Schema, so editors complete and validate keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.errors import ContractError, UsageError
from harness.fsutil import atomic_write_text
from harness.loader import contract_schema, load_contract

SCHEMA_NAME = "contract.schema.json"
PREFIX = {"criterion": "AC", "invariant": "INV", "falsifier": "FALSIFY"}
SECTION = {"criterion": "criteria", "invariant": "invariants", "falsifier": "falsifiers"}


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


def write_schema(folder: Path) -> Path:
    path = folder / SCHEMA_NAME
    atomic_write_text(path, json.dumps(contract_schema(), indent=2) + "\n", durable=False)
    return path


def init_project(root: Path, owner: str) -> list[str]:
    """Set up contracts/ and [tool.harness] in ``root``; returns what was done."""
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
    if re.search(r"^\[tool\.harness\]", text, re.M):
        done.append(f"kept existing [tool.harness] in {pyproject}")
    else:
        sep = "" if not text or text.endswith("\n") else "\n"
        atomic_write_text(pyproject, text + sep + PYPROJECT_TABLE.lstrip("\n" if not text else ""))
        done.append(f"added [tool.harness] to {pyproject}")
    evidence = root / "evidence"
    evidence.mkdir(exist_ok=True)
    return done


# --------------------------------------------------------------------------- new


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


def skeleton(kind: str, new_id: str, first_invariant: str = "INV-TODO-001") -> list[str]:
    if kind == "criterion":
        return [
            f"- id: {new_id}",
            "  title: TODO what a release manager signs off",
            "  statement: TODO one or two sentences",
            "  severity: blocker",
            "  owner: TODO team",
            '  references: ["TODO document and line this comes from"]',
            f"  invariants: [{first_invariant}]",
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
    return [
        f"- id: {new_id}",
        "  title: TODO the known-bad variant this check must catch",
        "  kind: mutant",
        f"  target: {first_invariant}",
        "  mutant:",
        '    patch: {"TODO.module:name": "TODO.module:bad_name"}',
    ]


def new_item(kind: str, path: Path) -> str:
    """Append a skeleton with the next free ID to ``path``; returns the ID."""
    if kind not in PREFIX:
        raise UsageError(f"unknown kind {kind!r}: use criterion, invariant or falsifier")
    from harness.config import load_config
    from harness.loader import discover

    if path.exists():
        load_contract(path)  # refuse to edit a file that is already broken
        text = path.read_text(encoding="utf-8")
    else:
        name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-") or "contract"
        write_schema(path.parent)
        text = (
            f"{schema_header(path)}version: 1\ncontract:\n  name: {name}\n"
            f"  title: TODO what this contract covers\n"
        )
    taken: set[str] = set(re.findall(r"\b(?:AC|INV|FALSIFY)-[A-Z0-9-]+\b", text))
    cfg = load_config(path.parent)
    for f in discover([p for p in cfg.contracts if p.exists()]):
        if f.resolve() != path.resolve():
            taken |= set(re.findall(r"\b(?:AC|INV|FALSIFY)-[A-Z0-9-]+\b", f.read_text()))
    area = _area(path, text)
    new_id = next_id(kind, area, taken)
    invs = re.findall(r"\bINV-[A-Z0-9-]+\b", text)
    first_inv = invs[0] if invs and kind == "falsifier" else "INV-TODO-001"
    lines = skeleton(kind, new_id, first_inv)
    updated = _append_to_section(text, SECTION[kind], lines)
    atomic_write_text(path, updated)
    try:
        from harness.yamlsrc import load_yaml

        load_yaml(updated)
    except Exception as exc:  # pragma: no cover - defensive: never leave a broken file
        atomic_write_text(path, text)
        raise ContractError([]) from exc
    return new_id


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
    indent = "  "
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "#", "-"))):
        m = re.match(r"^(\s*)- ", lines[end])
        if m and end > head:
            indent = m.group(1)
        end += 1
    while end > head + 1 and not lines[end - 1].strip():
        end -= 1
    new = [indent + ln for ln in item]
    return "\n".join([*lines[:end], *new, *lines[end:]]) + "\n"
