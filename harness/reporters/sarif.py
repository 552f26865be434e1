"""``--output sarif=FILE``: SARIF 2.1.0 for code-scanning dashboards (docs/ci.md).

Each invariant and falsifier that went wrong, and each criterion that is not GO,
is a result on its contract line (the file relative to the repository root). The
level follows the gate: ``error`` when the criterion fails the run, ``warning``
when it is only reported (a warn criterion, or a blocker the chosen ``--fail-on``
lets pass), ``note`` for an invariant that was skipped. The results of a WAIVED
criterion are notes with a ``suppressions`` entry (``external``, ``accepted``, the
waiver as justification); a GO criterion's unused waiver is one note. The fast
profile's UNPROVEN-FAST criteria that pass the gate are no result: nothing was
found wrong. Every result has a ``partialFingerprints`` entry that depends only on the
criterion, the invariant and the rule, so a dashboard tracks it across runs and
edits of the contract."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness import __version__
from harness.fsutil import atomic_write_json
from harness.hooks import Listener, RunInfo
from harness.judge import blocks_gate
from harness.model import (
    ContractSet,
    CriterionResult,
    FalsifierOutcome,
    InvariantOutcome,
    RunResult,
    Verdict,
)
from harness.reporters.locate import repo_path, waiver_location

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DISTRIBUTION = "ml-contract-harness"
FINGERPRINT = "harnessResult/v1"
_URL_LABELS = ("homepage", "home", "source", "source code", "repository", "documentation")
_WENT_WRONG = (
    FalsifierOutcome.REFUTED,
    FalsifierOutcome.MISSED,
    FalsifierOutcome.CRASHED,
    FalsifierOutcome.ERROR,
)


def information_uri(distribution: str = DISTRIBUTION) -> str | None:
    """The tool's home page as its installed metadata says ([project.urls] in its
    pyproject.toml: Homepage, Source or Repository first), else None."""
    from importlib import metadata

    try:
        meta = metadata.metadata(distribution)
    except metadata.PackageNotFoundError:
        return None
    urls = []
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = str(entry).partition(",")
        if url.strip().startswith(("https://", "http://")):
            urls.append((label.strip().lower(), url.strip()))
    for wanted in _URL_LABELS:
        for label, url in urls:
            if label == wanted:
                return url
    for home in meta.get_all("Home-page") or []:
        if str(home).startswith(("https://", "http://")):
            return str(home)
    return urls[0][1] if urls else None


def _location(file: str, line: int, col: int) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": repo_path(file), "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": line, "startColumn": col},
        }
    }


def _fingerprint(criterion_id: str, invariant_id: str, rule_id: str) -> dict[str, str]:
    text = f"{criterion_id}\0{invariant_id}\0{rule_id}"
    return {FINGERPRINT: hashlib.sha256(text.encode()).hexdigest()}


def _suppressed(c: CriterionResult) -> dict[str, Any]:
    """A WAIVED criterion's results carry a SARIF suppression: kept in the contract
    (``external`` to the code scanned), accepted, with the waiver as justification."""
    assert c.waiver is not None
    return {
        "suppressions": [
            {"kind": "external", "status": "accepted", "justification": c.waiver.note()}
        ]
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
        wrong = "error" if blocks_gate(c, result.fail_on) else "note" if c.waived else "warning"
        waived = _suppressed(c) if c.waived else {}
        for inv in c.invariants:
            if inv.outcome is InvariantOutcome.PASS:
                continue
            decl = invariants.get(inv.invariant_id)
            loc = decl.location if decl else c.location
            results.append(
                {
                    "ruleId": inv.invariant_id,
                    "ruleIndex": rule(inv.invariant_id, decl.title if decl else ""),
                    "level": "note" if inv.outcome is InvariantOutcome.SKIP else wrong,
                    "message": {
                        "text": f"{inv.invariant_id} {inv.outcome.value} "
                        f"({c.criterion_id}): {inv.message}"
                    },
                    "locations": [_location(loc.file, loc.line, loc.col)],
                    "partialFingerprints": _fingerprint(
                        c.criterion_id, inv.invariant_id, inv.invariant_id
                    ),
                    **waived,
                }
            )
        for f in c.falsifiers:
            if f.outcome not in _WENT_WRONG:
                continue
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
                    "level": wrong,
                    "message": {
                        "text": f"{f.falsifier_id} {f.outcome.value} against "
                        f"{f.target}: {f.message}"
                    },
                    "locations": [_location(loc.file, loc.line, loc.col)],
                    "partialFingerprints": _fingerprint(c.criterion_id, f.target, f.falsifier_id),
                    **waived,
                }
            )
        if c.verdict is Verdict.GO and c.waiver is not None:  # unused: say so, as a note
            loc = waiver_location(c, contracts)
            results.append(
                {
                    "ruleId": c.criterion_id,
                    "ruleIndex": rule(c.criterion_id, c.title),
                    "level": "note",
                    "message": {"text": f"{c.criterion_id} GO: {c.waiver.note()}"},
                    "locations": [_location(loc.file, loc.line, loc.col)],
                    "partialFingerprints": _fingerprint(c.criterion_id, "", "waiver"),
                }
            )
        if c.verdict is Verdict.GO or (
            c.verdict is Verdict.UNPROVEN_FAST and wrong != "error" and not c.waived
        ):
            continue
        own = f" ({c.verdict.value})" if c.waived else ""
        note = f"; {c.waiver.note()}" if c.waiver is not None else ""
        results.append(
            {
                "ruleId": c.criterion_id,
                "ruleIndex": rule(c.criterion_id, c.title),
                "level": wrong,
                "message": {
                    "text": f"{c.criterion_id} {c.label}{own}: "
                    + ("; ".join(c.reasons) or c.verdict.value)
                    + note
                },
                "locations": [_location(c.location.file, c.location.line, c.location.col)],
                "partialFingerprints": _fingerprint(c.criterion_id, "", c.criterion_id),
                **waived,
            }
        )
    driver: dict[str, Any] = {"name": "harness", "version": __version__}
    uri = information_uri()
    if uri is not None:
        driver["informationUri"] = uri
    driver["rules"] = list(rules.values())
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
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
