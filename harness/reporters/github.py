"""``--output github``: GitHub Actions workflow commands (docs/ci.md).

One annotation per criterion that is not GO, on the line of the invariant it
failed on (``file`` relative to the repository root, ``line`` and ``col``), at the
level the gate gives it: ``::error`` when the criterion fails the run (a blocker
NO-GO or UNPROVEN under the default ``--fail-on``, also one whose waiver expired),
``::warning`` when it is only reported (a warn criterion, a WAIVED one, or a blocker
the chosen ``--fail-on`` lets pass). The fast profile's UNPROVEN-FAST criteria that
pass the gate get one ``::notice`` between them, not one warning each; a GO
criterion with an unused waiver gets a ``::notice`` on the waiver's line.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from harness.hooks import Listener, RunInfo
from harness.judge import blocks_gate, failing_invariant
from harness.model import ContractSet, CriterionResult, Location, RunResult, Verdict
from harness.reporters.locate import repo_path, waiver_location


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _escape(text).replace(":", "%3A").replace(",", "%2C")


def annotation_location(c: CriterionResult, contracts: ContractSet | None) -> Location:
    """The line of the invariant ``c`` failed on, else the criterion's own line."""
    inv = failing_invariant(c)
    declared = contracts.invariants.get(inv) if contracts and inv else None
    return declared.location if declared is not None else c.location


def annotation_lines(result: RunResult, contracts: ContractSet | None = None) -> list[str]:
    lines = []
    fast = 0
    for c in result.criteria:
        blocking = blocks_gate(c, result.fail_on)
        if c.verdict is Verdict.GO:
            if c.waiver is not None:  # unused: worth removing, nothing went wrong
                loc = waiver_location(c, contracts)
                lines.append(
                    f"::notice file={_prop(repo_path(loc.file))},line={loc.line},col={loc.col},"
                    f"title={_prop(f'{c.criterion_id} GO: waiver unused')}::"
                    f"{_escape(c.waiver.note())}"
                )
            continue
        if c.verdict is Verdict.UNPROVEN_FAST and not blocking and not c.waived:
            fast += 1
            continue
        level = "error" if blocking else "warning"
        title = f"{c.criterion_id} {c.label}"
        if c.waived:
            title += f" ({c.verdict.value}; reported only until its waiver expires)"
        elif not blocking:
            why = (
                "a warn criterion never fails the run"
                if c.severity == "warn"
                else f"--fail-on {result.fail_on} lets it pass"
            )
            title += f" (reported only; {why})"
        message = "; ".join(c.reasons) or c.verdict.value
        if c.waiver is not None:
            message += f"; {c.waiver.note()}"
        loc = annotation_location(c, contracts)
        lines.append(
            f"::{level} file={_prop(repo_path(loc.file))},line={loc.line},col={loc.col},"
            f"title={_prop(title)}::{_escape(message)}"
        )
    if fast:
        lines.append(
            f"::notice title=harness --fast::{fast} criteria UNPROVEN-FAST: the fast profile "
            f"did not run their mutants and slow falsifiers; they pass --fail-on {result.fail_on}"
        )
    return lines


class GithubAnnotations(Listener):
    def __init__(self, stream: Any = None) -> None:
        self.stream: IO[str] = stream or sys.stdout
        self.contracts: ContractSet | None = None

    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Any) -> None:
        self.contracts = contracts

    def run_finished(self, result: RunResult) -> None:
        for line in annotation_lines(result, self.contracts):
            print(line, file=self.stream)
