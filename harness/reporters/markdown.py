"""``--output markdown=FILE``: a summary for a pull-request comment or CI step
summary. In a GitHub Actions job, ``--output github`` or ``--output markdown=...``
also appends it to ``$GITHUB_STEP_SUMMARY`` (``StepSummaryWriter``, added by
``make_writers``): appended once, never overwriting earlier steps."""

from __future__ import annotations

import os
from pathlib import Path

from harness.fsutil import atomic_write_text
from harness.hooks import Listener
from harness.judge import gate_passes
from harness.model import WAIVED, RunResult, Verdict

ICON = {
    Verdict.GO.value: "✅",
    Verdict.NO_GO.value: "❌",
    Verdict.UNPROVEN.value: "⚠️",
    Verdict.UNPROVEN_FAST.value: "⏩",
    WAIVED: "🔕",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _gate(result: RunResult) -> str:
    if result.interrupted:
        return "**not passed**, the run was interrupted (exit 2)"
    return "passed, exit 0" if gate_passes(result) else "**failed**, exit 1"


def markdown_summary(result: RunResult) -> str:
    lines = [
        f"## Release verdict: {ICON[result.verdict.value]} {result.verdict.value}",
        "",
        f"**{result.summary_line()}** — run `{result.run_id}`, profile `{result.profile}`, "
        f"seed `{result.seed}`",
        "",
        f"Gate (`--fail-on {result.fail_on}`): {_gate(result)}. "
        "Warn criteria are reported only; they never fail the run."
        + (
            " WAIVED criteria (a waiver holds) do not fail it until their waiver expires."
            if any(c.waived for c in result.criteria)
            else ""
        ),
        "",
        "| verdict | criterion | title | severity | reason |",
        "|---|---|---|---|---|",
    ]
    for c in result.criteria:
        reason = c.reasons[0] if c.reasons else ""
        verdict = f"{ICON[c.label]} {c.label}" + (f" ({c.verdict.value})" if c.waived else "")
        if c.waiver is not None:
            reason = f"{reason}; {c.waiver.note()}" if reason else c.waiver.note()
        lines.append(
            f"| {verdict} | {c.criterion_id} | {_cell(c.title)} | {c.severity} | {_cell(reason)} |"
        )
    if result.interrupted:
        lines += ["", "**The run was interrupted; the evidence is incomplete.**"]
    return "\n".join(lines) + "\n"


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file (also through links, or before it exists)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


class MarkdownWriter(Listener):
    """Writes (replaces) FILE with the summary."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, result: RunResult) -> None:
        atomic_write_text(self.path, markdown_summary(result))


class StepSummaryWriter(Listener):
    """Appends the summary to a GitHub Actions step summary file: other steps of the
    job wrote there before, and their content stays."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, result: RunResult) -> None:
        text = markdown_summary(result)
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() > 0:
                text = "\n" + text  # a blank line after what an earlier step wrote
            fh.write(text)
