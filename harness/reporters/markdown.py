"""``--output markdown=FILE``: a summary for a pull-request comment or CI step
summary; appended to ``$GITHUB_STEP_SUMMARY`` too when that is set."""

from __future__ import annotations

import os
from pathlib import Path

from harness.fsutil import atomic_write_text
from harness.hooks import Listener
from harness.model import RunResult, Verdict

ICON = {Verdict.GO: "✅", Verdict.NO_GO: "❌", Verdict.UNPROVEN: "⚠️", Verdict.UNPROVEN_FAST: "⏩"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def markdown_summary(result: RunResult) -> str:
    lines = [
        f"## Release verdict: {ICON[result.verdict]} {result.verdict.value}",
        "",
        f"**{result.summary_line()}** — run `{result.run_id}`, profile `{result.profile}`, "
        f"seed `{result.seed}`",
        "",
        "| verdict | criterion | title | severity | reason |",
        "|---|---|---|---|---|",
    ]
    for c in result.criteria:
        reason = c.reasons[0] if c.reasons else ""
        lines.append(
            f"| {ICON[c.verdict]} {c.verdict.value} | {c.criterion_id} | "
            f"{_cell(c.title)} | {c.severity} | {_cell(reason)} |"
        )
    if result.interrupted:
        lines += ["", "**The run was interrupted; the evidence is incomplete.**"]
    return "\n".join(lines) + "\n"


class MarkdownWriter(Listener):
    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, result: RunResult) -> None:
        text = markdown_summary(result)
        atomic_write_text(self.path, text)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(text)
