"""The run folders of an evidence directory: list them, name one, prune old ones.

Every command that takes a run (``verify``, ``report``, ``rerun``, ``promote``,
``signoff``, ``diff``) names it the same way, through ``resolve_run``: a path to the
folder, a run id (or a unique prefix of one), ``latest`` (the newest complete run: one
without the INCOMPLETE marker) or ``previous`` (the complete run before it). A killed or
interrupted run is named by its id or folder. ``harness gc`` deletes old runs and never
one that a promotion or a sign-off names, nor one still being written.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError

MARKER = "INCOMPLETE"  # as harness.evidence writes it: present until the run finished
SIGNOFFS = "signoffs"  # <evidence>/signoffs/<run-id>/<target>/<role>.dsse.json
KEYWORDS = ("latest", "previous")


def run_dirs(evidence: Path) -> list[Path]:
    """The run folders under ``evidence``, oldest first (run ids sort by time)."""
    if not evidence.is_dir():
        return []
    return sorted(
        p
        for p in evidence.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and not p.name.startswith(".")
        and (p / "run.json").is_file()
    )


def is_complete(run_dir: Path) -> bool:
    """The run finished and its bundle was sealed (the marker is removed last)."""
    return not (run_dir / MARKER).exists() and (run_dir / "results.json").is_file()


def why_incomplete(run_dir: Path) -> str:
    """What the INCOMPLETE marker says (killed, interrupted, not signed ...)."""
    try:
        said = (run_dir / MARKER).read_text(errors="replace").strip()
    except OSError:
        said = ""
    return said or "killed, interrupted or still running"


def resolve_run(evidence: Path, ref: str) -> Path:
    """The run folder ``ref`` names: a path (anything that exists, or has a slash),
    ``latest``, ``previous``, a run id or a unique prefix of one (looked up in
    ``evidence``). A UsageError says why not."""
    p = Path(ref)
    if ref not in KEYWORDS and (os.path.lexists(p) or os.sep in ref or "/" in ref):
        if not os.path.lexists(p):
            raise UsageError(f"no run folder {ref} (`harness history` lists the runs)")
        return p  # a path is taken as given: the command says what is wrong with it
    runs = run_dirs(evidence)
    if not runs:
        raise UsageError(
            f"no run {ref!r}: {evidence} holds no runs yet (`harness run` makes the first)"
        )
    if ref in KEYWORDS:
        return _newest_complete(evidence, runs, 1 if ref == "latest" else 2)
    exact = [r for r in runs if r.name == ref]
    matches = exact or [r for r in runs if r.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"{ref!r} names {len(matches)} runs in {evidence} "
            f"({', '.join(m.name for m in matches[:4])}{' ...' if len(matches) > 4 else ''}); "
            "give more of the run id"
        )
    raise UsageError(f"no run {ref!r} in {evidence} (`harness history` lists them)")


def _newest_complete(evidence: Path, runs: list[Path], nth: int) -> Path:
    """The ``nth`` newest run of ``runs`` (oldest first) whose bundle has no INCOMPLETE
    marker (a run killed, interrupted or still being written has one)."""
    complete = [r for r in runs if not (r / MARKER).exists()]
    if len(complete) >= nth:
        return complete[-nth]
    incomplete = [r for r in runs if r not in complete]
    if not complete:
        raise UsageError(
            f"no complete run in {evidence}, only {len(incomplete)} incomplete run(s) "
            "(killed, interrupted or being written); name one by its id, e.g. "
            f"{incomplete[-1].name} (`harness history` lists them)"
        )
    skipped = f" (and {len(incomplete)} incomplete, named only by id)" if incomplete else ""
    raise UsageError(
        f"no previous run: {evidence} holds one complete run, {complete[-1].name}{skipped}"
    )


def require_results(run_dir: Path) -> None:
    """Refuse, in one line, a run with no results to read (one killed mid-run)."""
    if (run_dir / "results.json").is_file():
        return
    raise UsageError(
        f"run {run_dir.name} is incomplete ({why_incomplete(run_dir)}): it has no "
        f"results.json, so it has no verdicts to read; pick a finished run "
        "(`harness history` lists them)"
    )


# --------------------------------------------------------------------------- gc


@contextmanager
def _unless_live(run_dir: Path) -> Iterator[bool]:
    """Yields False while another process writes the run (its writer holds a shared
    lock on the folder for the run's life; see ``hold_run_lock``), else True with
    the folder locked against a writer for the block."""
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def hold_run_lock(run_dir: Path) -> int:
    """Take the shared lock a run's writer holds until it closes the returned fd:
    ``harness gc`` never deletes a run while it is being written."""
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def promoted_runs(ledger: Path) -> set[str]:
    """The run ids the promotion registry names. Every record counts, verified or
    not (a record kept in doubt keeps its run); a line that cannot be read stops
    the caller, since the run it named cannot be known."""
    if not ledger.exists():
        return set()
    try:
        data = ledger.read_bytes()
    except OSError as exc:
        raise UsageError(f"{ledger}: cannot read the promotion registry ({exc.strerror})") from exc
    ids: set[str] = set()
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line).get("record", {})
            run_id = record.get("run_id")
            run_dir = record.get("run_dir")
        except (ValueError, AttributeError, RecursionError) as exc:
            raise UsageError(
                f"{ledger}:{n}: not a promotion record, so which runs are promoted is "
                "unknown; fix the registry (`harness promotions` checks it) before gc"
            ) from exc
        ids |= {str(run_id)} if run_id else set()
        ids |= {Path(str(run_dir)).name} if run_dir else set()
    return ids


def signed_off_runs(evidence: Path) -> set[str]:
    folder = evidence / SIGNOFFS
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


def folder_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class GcPlan:
    """What ``harness gc`` deletes, and every run it keeps with the reason."""

    delete: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)


def plan_gc(evidence: Path, keep: int, ledger: Path) -> GcPlan:
    """Keep the ``keep`` newest complete runs, every promoted or signed-off run and
    every run still being written; the rest is to delete."""
    if keep < 0:
        raise UsageError(f"--keep {keep}: keep zero or more runs")
    promoted = promoted_runs(ledger)
    signed = signed_off_runs(evidence)
    plan = GcPlan()
    runs = run_dirs(evidence)
    newest = [r for r in runs if is_complete(r)][::-1][:keep]
    for run in runs[::-1]:
        if run in newest:
            plan.kept.append((run, f"one of the {keep} newest complete runs"))
        elif run.name in promoted:
            plan.kept.append((run, f"promoted (in {ledger.name})"))
        elif run.name in signed:
            plan.kept.append((run, "signed off"))
        else:
            with _unless_live(run) as idle:
                if idle:
                    plan.delete.append(run)
                else:
                    plan.kept.append((run, "being written by a run in progress"))
    return plan


def delete_runs(runs: list[Path]) -> list[tuple[Path, int]]:
    """Delete each run folder (renamed aside first, so a half-deleted folder never
    looks like a run); returns each with the bytes it held. A run that became live
    since it was planned is left alone."""
    done: list[tuple[Path, int]] = []
    for run in runs:
        with _unless_live(run) as idle:
            if not idle:
                continue
            size = folder_size(run)
            aside = run.with_name(f".{run.name}.gc")
            os.rename(run, aside)
        try:
            shutil.rmtree(aside)
        except OSError as exc:
            raise UsageError(
                f"{run.name}: moved aside to {aside} but could not delete it ({exc}); "
                "delete that folder by hand"
            ) from exc
        done.append((run, size))
    return done


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns
