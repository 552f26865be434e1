"""``--output sarif=FILE``: SARIF 2.1.0 for code-scanning dashboards. Each
failing invariant (and each criterion that is not GO) points at its contract line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import __version__
from harness.fsutil import atomic_write_json
from harness.hooks import Listener, RunInfo
from harness.model import ContractSet, FalsifierOutcome, InvariantOutcome, RunResult, Verdict

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _location(file: str, line: int, col: int) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": file, "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": line, "startColumn": col},
        }
    }


def sarif_log(result: RunResult, contracts: ContractSet | None) -> dict[str, Any]:
    invariants = contracts.invariants if contracts else {}
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []

    def rule(rule_id: str, text: str) -> int:
        if rule_id not in rules:
            rules[rule_id] = {"id": rule_id, "shortDescription": {"text": text or rule_id}}
        return list(rules).index(rule_id)

    for c in result.criteria:
        for inv in c.invariants:
            if inv.outcome is InvariantOutcome.PASS:
                continue
            decl = invariants.get(inv.invariant_id)
            loc = decl.location if decl else c.location
            level = "warning" if inv.outcome is InvariantOutcome.SKIP else "error"
            results.append(
                {
                    "ruleId": inv.invariant_id,
                    "ruleIndex": rule(inv.invariant_id, decl.title if decl else ""),
                    "level": level,
                    "message": {
                        "text": f"{inv.invariant_id} {inv.outcome.value} "
                        f"({c.criterion_id}): {inv.message}"
                    },
                    "locations": [_location(loc.file, loc.line, loc.col)],
                }
            )
        for f in c.falsifiers:
            if f.outcome in (
                FalsifierOutcome.REFUTED,
                FalsifierOutcome.MISSED,
                FalsifierOutcome.CRASHED,
                FalsifierOutcome.ERROR,
            ):
                decl_f = (
                    next((x for x in contracts.falsifiers if x.id == f.falsifier_id), None)
                    if contracts
                    else None
                )
                loc = decl_f.location if decl_f else c.location
                results.append(
                    {
                        "ruleId": f.falsifier_id,
                        "ruleIndex": rule(f.falsifier_id, decl_f.title if decl_f else ""),
                        "level": "error" if f.outcome is FalsifierOutcome.REFUTED else "warning",
                        "message": {
                            "text": f"{f.falsifier_id} {f.outcome.value} against "
                            f"{f.target}: {f.message}"
                        },
                        "locations": [_location(loc.file, loc.line, loc.col)],
                    }
                )
        if c.verdict is not Verdict.GO:
            results.append(
                {
                    "ruleId": c.criterion_id,
                    "ruleIndex": rule(c.criterion_id, c.title),
                    "level": "error" if c.verdict is Verdict.NO_GO else "warning",
                    "message": {
                        "text": f"{c.criterion_id} {c.verdict.value}: "
                        + ("; ".join(c.reasons) or c.verdict.value)
                    },
                    "locations": [_location(c.location.file, c.location.line, c.location.col)],
                }
            )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "harness",
                        "version": __version__,
                        "informationUri": "https://example.invalid/ml-contract-harness",
                        "rules": list(rules.values()),
                    }
                },
                "automationDetails": {"id": f"harness/{result.run_id}"},
                "results": results,
            }
        ],
    }


class SarifWriter(Listener):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.contracts: ContractSet | None = None

    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Any) -> None:
        self.contracts = contracts

    def run_finished(self, result: RunResult) -> None:
        atomic_write_json(self.path, sarif_log(result, self.contracts))
