"""Checks on contract sets themselves: they parse, validate, have unique IDs,
and the loader rejects malformed contracts with a location."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness.context import CheckContext


def _paths(ctx: CheckContext) -> list[Path]:
    return [ctx.root / p for p in ctx.params.get("paths", ["contracts"])]


def contracts_validate(ctx: CheckContext) -> dict[str, Any]:
    """Every contract file loads against the schema, references resolve, no skeleton
    TODO is left and every invariant has a falsifier (``harness lint`` without importing
    the bindings). observations: files (that load), errors, first_error."""
    from harness.config import load_config
    from harness.lint import lint_paths

    max_days = load_config(ctx.root).max_waiver_days  # as `harness lint` and `run` judge them
    contracts, diags = lint_paths(_paths(ctx), ctx.root, resolve=False, max_waiver_days=max_days)
    errors = [d for d in diags if d.severity == "error"]
    return {
        "files": len(contracts),
        "errors": len(errors),
        "first_error": errors[0].format() if errors else "",
    }


def ids_unique(ctx: CheckContext) -> dict[str, Any]:
    """Count IDs defined more than once across every contract under ``paths``.
    Reads the files as YAML directly, independent of the loader's own check."""
    import yaml

    from harness.loader import discover

    seen: dict[str, int] = {}
    files = discover(_paths(ctx))
    for f in files:
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for section in ("criteria", "invariants", "falsifiers"):
            for item in data.get(section, []) or []:
                if isinstance(item, dict) and "id" in item:
                    seen[item["id"]] = seen.get(item["id"], 0) + 1
    dups = sorted(i for i, n in seen.items() if n > 1)
    return {"ids": len(seen), "duplicates": len(dups), "duplicate_ids": dups, "files": len(files)}


def malformed_rejected(ctx: CheckContext) -> dict[str, Any]:
    """Each file of a corpus of malformed contracts (params.corpus) must be refused
    with a diagnostic at the line named by its first-line comment ``# expect-line: N``.
    observations: cases, rejected_at_line, accepted (count of files wrongly loaded)."""
    from harness.errors import ContractError
    from harness.loader import load_contract

    corpus = ctx.root / ctx.params.get("corpus", "tests/fixtures/malformed")
    cases = sorted(corpus.glob("*.yaml"))
    good = 0
    accepted: list[str] = []
    wrong: list[str] = []
    crashed: list[str] = []
    for case in cases:
        m = re.search(r"#\s*expect-line:\s*(\d+)", case.read_text(encoding="utf-8"))
        want = int(m.group(1)) if m else None
        try:
            load_contract(case)
            accepted.append(case.name)
        except ContractError as exc:
            lines = [d.line for d in exc.diagnostics]
            if want is None or want in lines:
                good += 1
            else:
                wrong.append(f"{case.name}: lines {lines}, expected {want}")
        except Exception as exc:  # a crash is not a refusal with a location
            crashed.append(f"{case.name}: {type(exc).__name__}: {exc}")
    return {
        "cases": len(cases),
        "rejected_at_line": good,
        "accepted": len(accepted),
        "crashed": len(crashed),
        "misplaced": len(wrong),
        "accepted_files": accepted,
        "wrong_lines": wrong,
        "crashes": crashed,
    }


def schema_published(ctx: CheckContext) -> dict[str, Any]:
    """The schema file beside the contracts equals the schema the package validates with."""
    from harness.loader import contract_schema

    path = ctx.root / ctx.params.get("schema_file", "contracts/contract.schema.json")
    if not path.is_file():
        return {"exists": False, "in_sync": False}
    published = json.loads(path.read_text(encoding="utf-8"))
    return {"exists": True, "in_sync": published == contract_schema()}


_VALID = """version: 1
contract: {{name: generated, title: a generated contract}}
criteria:
  - id: AC-GEN-001
{fields}invariants:
  - id: INV-GEN-001
    title: generated invariant
    check: {{python: "harness.checks.files:files_exist"}}
    expect: {{missing: {{eq: 0}}}}
"""
_FIELDS = {
    "id": None,
    "title": "title: generated criterion",
    "severity": "severity: blocker",
    "references": "references: [generated]",
    "invariants": "invariants: [INV-GEN-001]",
}
_WRONG = {
    "title": "title: [not, a, string]",
    "severity": "severity: 3",
    "references": "references: generated",
    "invariants": "invariants: INV-GEN-001",
}


def generated_defect_rejected(ctx: CheckContext) -> dict[str, Any]:
    """Build a valid contract, seed one defect (params: field, defect, junk) and
    load it: the loader must refuse it with a diagnostic on the defect's line.
    observations: rejected (bool), at_line (bool), lines, expected_line."""
    from harness.errors import ContractError
    from harness.loader import load_contract

    field, defect = ctx.params.get("field", "severity"), ctx.params.get("defect", "wrong_type")
    junk = re.sub(r"[^a-z]", "", str(ctx.params.get("junk", "x")).lower()) or "x"
    rows = ["  - id: AC-GEN-001"] + ["    " + line for line in _FIELDS.values() if line]
    index = {"id": 0, **{name: i for i, name in enumerate(list(_FIELDS)[1:], 1)}}[field]
    target = 4 + index  # criteria[0] starts on line 4
    line = rows[index]
    if defect == "delete":
        target = 4  # a missing key is reported at its mapping
        rows[index] = "  - " + rows[1].strip() if index == 0 else ""
        if index == 0:
            del rows[1]
    elif defect == "misspell":
        rows[index] = line.replace(f"{field}:", f"{field}{junk}:", 1)
    else:
        rows[index] = "  - id: 42" if index == 0 else "    " + _WRONG[field]
    text = _VALID.format(fields="".join(r + "\n" for r in rows[1:] if r)).replace(
        "  - id: AC-GEN-001\n", rows[0] + "\n" if rows[0] else "", 1
    )
    path = ctx.scratch / "generated.yaml"
    path.write_text(text)
    ctx.attach(path, "generated.yaml")
    try:
        load_contract(path)
    except ContractError as exc:
        lines = sorted({d.line for d in exc.diagnostics})
        return {
            "rejected": True,
            "at_line": target in lines,
            "lines": lines,
            "expected_line": target,
        }
    except Exception as exc:  # a crash is not a refusal with a location
        return {
            "rejected": False,
            "at_line": False,
            "lines": [],
            "expected_line": target,
            "crash": f"{type(exc).__name__}: {exc}",
        }
    return {"rejected": False, "at_line": False, "lines": [], "expected_line": target}
