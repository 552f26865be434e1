"""``--output junit=FILE``: one testcase per invariant and falsifier."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.fsutil import atomic_write_bytes
from harness.hooks import Listener
from harness.model import FalsifierOutcome, InvariantOutcome, RunResult

_BAD_FALSIFIER = {
    FalsifierOutcome.REFUTED: "failure",
    FalsifierOutcome.MISSED: "failure",
    FalsifierOutcome.ERROR: "error",
    FalsifierOutcome.CRASHED: "error",
    FalsifierOutcome.NOT_RUN: "skipped",
}


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def junit_xml(result: RunResult) -> bytes:
    suites = ET.Element("testsuites", name="harness", time=f"{_total(result):.3f}")
    for c in result.criteria:
        cases = []
        counts = {"failures": 0, "errors": 0, "skipped": 0}
        for inv in c.invariants:
            case = ET.Element(
                "testcase",
                classname=c.criterion_id,
                name=inv.invariant_id,
                time=f"{inv.duration:.3f}",
                file=c.location.file,
            )
            if inv.outcome is InvariantOutcome.FAIL:
                ET.SubElement(case, "failure", message=_clean(inv.message)).text = _clean(
                    inv.message
                )
                counts["failures"] += 1
            elif inv.outcome is InvariantOutcome.ERROR:
                ET.SubElement(case, "error", message=_clean(inv.message))
                counts["errors"] += 1
            elif inv.outcome is InvariantOutcome.SKIP:
                ET.SubElement(case, "skipped", message=_clean(inv.message))
                counts["skipped"] += 1
            cases.append(case)
        for f in c.falsifiers:
            case = ET.Element(
                "testcase",
                classname=c.criterion_id,
                name=f"{f.falsifier_id} ({f.kind} vs {f.target})",
                time=f"{f.duration:.3f}",
                file=c.location.file,
            )
            tag = _BAD_FALSIFIER.get(f.outcome)
            if tag:
                ET.SubElement(case, tag, message=_clean(f"{f.outcome.value}: {f.message}"))
                counts[
                    "failures" if tag == "failure" else "errors" if tag == "error" else "skipped"
                ] += 1
            cases.append(case)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{c.criterion_id} {c.title}",
            tests=str(len(cases)),
            time=f"{c.duration:.3f}",
            attrib={k: str(v) for k, v in counts.items()},
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=c.verdict.value)
        ET.SubElement(props, "property", name="severity", value=c.severity)
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
