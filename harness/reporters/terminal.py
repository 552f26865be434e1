"""The terminal reporter: a line per criterion as it finishes, denominators at the end.

Each criterion's line is printed as soon as it is judged (``[3/32] GO  AC-...``),
in a terminal and in a CI log alike, so a long run shows progress. Without a
terminal (a CI log, a pipe) the lines come in the order criteria finish, so they
are printed once more at the end in the contracts' order, as pytest closes a log
with its summary; in a terminal the progress lines are the report."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO

import click

from harness.hooks import Listener, RunInfo
from harness.judge import gate_passes
from harness.model import ContractSet, CriterionResult, FalsifierOutcome, RunResult, Verdict
from harness.plan import Plan

COLORS = {
    Verdict.GO: "green",
    Verdict.NO_GO: "red",
    Verdict.UNPROVEN: "yellow",
    Verdict.UNPROVEN_FAST: "yellow",
}


WAIVED_COLOR = "magenta"


def criterion_line(r: CriterionResult, width: int = 0) -> str:
    """``VERDICT AC-ID title — first reason``; a WAIVED criterion's own verdict leads
    its reason, and the waiver's note (waived until, expired on, unused) ends the line."""
    color = WAIVED_COLOR if r.waived else COLORS[r.verdict]
    verdict = click.style(f"{r.label:<13}", fg=color, bold=True)
    sev = "" if r.severity == "blocker" else " [warn]"
    line = f"{verdict} {r.criterion_id:<18} {r.title}{sev}"
    notes = []
    if r.verdict is not Verdict.GO and r.reasons:
        more = f" (+{len(r.reasons) - 1} more)" if len(r.reasons) > 1 else ""
        own = f"{r.verdict.value}: " if r.waived else ""
        notes.append(f"{own}{r.reasons[0]}{more}")
    elif r.waived:
        notes.append(r.verdict.value)
    if r.waiver is not None:
        notes.append(r.waiver.note())
    return line + (" — " + "; ".join(notes) if notes else "")


class TerminalReporter(Listener):
    def __init__(self, stream: IO[str] | None = None, verbose: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.verbose = verbose
        self.total = 0
        self.done = 0
        self.plan: Plan | None = None
        self.stream_gone = False

    def echo(self, text: str = "") -> None:
        """Print a line; once the stream's reader has gone (``| head``), nothing more:
        the run goes on without its progress lines and seals its bundle."""
        if self.stream_gone:
            return
        try:
            click.echo(text, file=self.stream, color=self.live or None)
        except BrokenPipeError:
            self.stream_gone = True

    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Plan) -> None:
        self.plan = plan
        self.total = len(plan.criteria)
        self.echo(
            f"harness run {info.run_id}: {self.total} criteria, {len(plan.tasks)} checks, "
            f"profile {info.profile}, seed {info.seed}, {info.jobs} workers"
        )

    def service_started(self, key: str, record: Mapping[str, object]) -> None:
        if record.get("error"):
            self.echo(f"service {key}: {record['error']}")
        else:
            self.echo(f"service {key}: ready at {record['url']} in {record['ready_s']} s")

    def criterion_finished(self, result: CriterionResult) -> None:
        self.done += 1
        self.echo(f"[{self.done}/{self.total}] " + criterion_line(result))

    def run_finished(self, result: RunResult) -> None:
        if not self.live and result.criteria:
            self.echo()
            self.echo("summary, in the contracts' order:")
            for r in result.criteria:
                self.echo(criterion_line(r))
        if self.verbose:
            for r in result.criteria:
                for reason in r.reasons:
                    self.echo(f"    {r.criterion_id}: {reason}")
                if r.waiver is not None:
                    self.echo(f"    {r.criterion_id}: {r.waiver.note()}")
        if result.profile == "teeth":
            self._teeth_table(result)
        if result.profile == "fast":
            skipped = [
                f
                for r in result.criteria
                for f in r.falsifiers
                if f.outcome is FalsifierOutcome.NOT_RUN
            ]
            mutants = sum(1 for f in skipped if f.kind == "mutant")
            self.echo(
                f"fast profile: {len(skipped)} falsifiers not run ({mutants} mutants, "
                f"{len(skipped) - mutants} slow searches); criteria that would otherwise "
                "be GO are reported UNPROVEN-FAST"
            )
        self.echo()
        if result.interrupted:
            self.echo(
                click.style("INTERRUPTED", fg="red", bold=True)
                + f": {len(result.criteria)} of {self.total} criteria finished"
            )
        self.echo(result.summary_line())
        release = click.style(result.verdict.value, fg=COLORS[result.verdict], bold=True)
        where = f" (evidence: {result.evidence_dir})" if result.evidence_dir else ""
        warn = sum(
            1
            for r in result.criteria
            if r.severity == "warn" and r.verdict is not Verdict.GO and not r.waived
        )
        note = f"; {warn} warn criteria not GO, reported only" if warn else ""
        waived = sum(1 for r in result.criteria if r.waived)
        if waived:
            until = "their waivers expire" if waived > 1 else "its waiver expires"
            note += f"; {waived} WAIVED, not blocking until {until}"
        self.echo(f"release verdict: {release}{where}{note}")
        if result.verdict is not Verdict.GO and not result.interrupted:
            passed = gate_passes(result)
            self.echo(
                f"gate (--fail-on {result.fail_on}): "
                + (click.style("passed", fg="green") if passed else click.style("failed", fg="red"))
                + f", exit {0 if passed else 1}"
            )

    def _teeth_table(self, result: RunResult) -> None:
        rows = [
            (f.target, f.falsifier_id, f.outcome.value, f"{f.duration:.2f}s")
            for r in result.criteria
            for f in r.falsifiers
        ]
        self.echo()
        self.echo(f"{'invariant':<22} {'mutant':<26} {'outcome':<8} time")
        for inv, mut, outcome, t in rows:
            color = "green" if outcome == FalsifierOutcome.KILLED.value else "red"
            self.echo(f"{inv:<22} {mut:<26} {click.style(f'{outcome:<8}', fg=color)} {t}")
        killed = sum(1 for r in rows if r[2] == "KILLED")
        self.echo(f"{len(rows)} mutants: {killed} KILLED, {len(rows) - killed} not killed")
