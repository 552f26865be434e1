"""``--output junit=FILE``: one testcase per invariant and falsifier.

The cases follow the gate (docs/ci.md): a check that went wrong is a ``<failure>``
or ``<error>`` only when its criterion fails the run. In a criterion that is only
reported (a warn criterion, a WAIVED one, or a blocker the chosen ``--fail-on`` lets
pass) it is ``<skipped>`` with the reason, as pytest reports such a criterion xfailed,
so a CI test view never shows red for a run that passed. A criterion with a waiver
that was used or has expired gets one more case, ``waiver``: skipped with the reason
while it holds, a failure saying it expired once the criterion blocks again.

A case's ``file`` is its contract file relative to the repository root (the git
toplevel, else the project root) wherever the command runs, as in GitHub
annotations and SARIF (``harness.reporters.locate``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.fsutil import atomic_write_bytes
from harness.hooks import Listener
from harness.judge import blocks_gate
from harness.model import (
    CriterionResult,
    FalsifierOutcome,
    InvariantOutcome,
    RunResult,
    WaiverStatus,
)
from harness.reporters.locate import repo_path

_BAD_INVARIANT = {
    InvariantOutcome.FAIL: "failure",
    InvariantOutcome.ERROR: "error",
    InvariantOutcome.SKIP: "skipped",
}
_BAD_FALSIFIER = {
    FalsifierOutcome.REFUTED: "failure",
    FalsifierOutcome.MISSED: "failure",
    FalsifierOutcome.ERROR: "error",
    FalsifierOutcome.CRASHED: "error",
    FalsifierOutcome.NOT_RUN: "skipped",
}


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def reported_only(c: CriterionResult, fail_on: str) -> str:
    """Why a criterion that is not GO does not fail the run ("" when it does)."""
    if blocks_gate(c, fail_on):
        return ""
    if c.waived:
        assert c.waiver is not None
        return (
            f"{c.criterion_id} is WAIVED ({c.verdict.value}), reported only "
            f"({c.waiver.note()}: does not fail the run)"
        )
    why = "a warn criterion" if c.severity == "warn" else f"--fail-on {fail_on}"
    return f"{c.criterion_id} is {c.verdict.value}, reported only ({why}: does not fail the run)"


def _waiver_case(c: CriterionResult, fail_on: str, counts: dict[str, int]) -> ET.Element | None:
    """One case for the criterion's waiver when it was used or has expired: skipped
    with the reason while it holds, a failure (when the criterion fails the run) saying
    it expired. An unused waiver has no case (its suite's properties tell it)."""
    if c.waiver is None or c.waiver.status is WaiverStatus.UNUSED:
        return None
    case = ET.Element(
        "testcase",
        classname=c.criterion_id,
        name="waiver",
        time="0.000",
        file=repo_path(c.location.file),
    )
    first = f": {c.reasons[0]}" if c.reasons else ""
    if c.waived:
        _mark(case, "skipped", reported_only(c, fail_on) + first, counts, "")
    elif blocks_gate(c, fail_on):
        message = f"{c.criterion_id} is {c.verdict.value} again, {c.waiver.note()}{first}"
        _mark(case, "failure", message, counts, "")
    else:
        _mark(case, "skipped", f"{reported_only(c, fail_on)}: {c.waiver.note()}", counts, "")
    return case


def _mark(
    case: ET.Element,
    tag: str,
    message: str,
    counts: dict[str, int],
    only_reported: str,
    outcome: str = "",
) -> None:
    """Record what went wrong with a case: as ``tag``, or skipped with the reason when
    its criterion is only reported."""
    if only_reported and tag != "skipped":
        tag, message = "skipped", f"{only_reported}: {outcome}{message}"
    ET.SubElement(case, tag, message=_clean(message)).text = (
        _clean(message) if tag == "failure" else None
    )
    counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[tag]] += 1


def junit_xml(result: RunResult) -> bytes:
    suites = ET.Element("testsuites", name="harness", time=f"{_total(result):.3f}")
    for c in result.criteria:
        cases = []
        counts = {"failures": 0, "errors": 0, "skipped": 0}
        only_reported = reported_only(c, result.fail_on)
        file = repo_path(c.location.file)
        for inv in c.invariants:
            case = ET.Element(
                "testcase",
                classname=c.criterion_id,
                name=inv.invariant_id,
                time=f"{inv.duration:.3f}",
                file=file,
            )
            tag = _BAD_INVARIANT.get(inv.outcome)
            if tag:
                _mark(case, tag, inv.message, counts, only_reported, f"{inv.outcome.value}: ")
            cases.append(case)
        for f in c.falsifiers:
            case = ET.Element(
                "testcase",
                classname=c.criterion_id,
                name=f"{f.falsifier_id} ({f.kind} vs {f.target})",
                time=f"{f.duration:.3f}",
                file=file,
            )
            tag = _BAD_FALSIFIER.get(f.outcome)
            if tag:
                _mark(case, tag, f"{f.outcome.value}: {f.message}", counts, only_reported)
            cases.append(case)
        waiver_case = _waiver_case(c, result.fail_on, counts)
        if waiver_case is not None:
            cases.append(waiver_case)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{c.criterion_id} {c.title}",
            tests=str(len(cases)),
            time=f"{c.duration:.3f}",
            attrib={k: str(v) for k, v in counts.items()},
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=c.label)
        if c.waived:
            ET.SubElement(props, "property", name="own_verdict", value=c.verdict.value)
        if c.waiver is not None:
            ET.SubElement(props, "property", name="waiver", value=c.waiver.status.value)
            ET.SubElement(props, "property", name="waiver_expires", value=c.waiver.expires)
        ET.SubElement(props, "property", name="severity", value=c.severity)
        ET.SubElement(
            props, "property", name="fails_run", value=str(blocks_gate(c, result.fail_on)).lower()
        )
        suite.extend(cases)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def _total(result: RunResult) -> float:
    return sum(c.duration for c in result.criteria)


class JunitWriter(Listener):
    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, result: RunResult) -> None:
        atomic_write_bytes(self.path, junit_xml(result))
