"""Runs over time: ``harness history`` (an SQLite index rebuilt from the
bundles, which stay the source of truth) and ``harness diff RUN_A RUN_B``
(runs named as ``harness.runs.resolve_run`` names them)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.model import RunResult, Verdict
from harness.runs import require_results, resolve_run, run_dirs

INDEX = ".index.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, started TEXT, commit_sha TEXT,
                                 dirty INTEGER, verdict TEXT, profile TEXT, complete INTEGER);
CREATE TABLE IF NOT EXISTS criteria (run_id TEXT, criterion_id TEXT, verdict TEXT,
                                     severity TEXT, PRIMARY KEY (run_id, criterion_id));
"""


def open_index(evidence: Path) -> sqlite3.Connection:
    """Open the index, adding any bundle it does not know yet and dropping the ones
    gone from disk (rebuilt when missing; kept in memory when the folder is read-only)."""
    db = None
    try:
        db = sqlite3.connect(evidence / INDEX)
        db.executescript(SCHEMA)
    except sqlite3.Error:  # read-only, or not a database: index in memory this time
        if db is not None:
            db.close()
        db = sqlite3.connect(":memory:")
        db.executescript(SCHEMA)
    runs = run_dirs(evidence)
    present = [(r.name,) for r in runs]
    db.execute("CREATE TEMP TABLE present (run_id TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO present VALUES (?)", present)
    for table in ("runs", "criteria"):
        db.execute(f"DELETE FROM {table} WHERE run_id NOT IN (SELECT run_id FROM present)")
    known = {row[0] for row in db.execute("SELECT run_id FROM runs WHERE complete = 1")}
    for run_dir in runs:
        if run_dir.name in known:
            continue
        try:
            meta = json.loads((run_dir / "run.json").read_text())
            results = (
                json.loads((run_dir / "results.json").read_text())
                if (run_dir / "results.json").is_file()
                else {"criteria": []}
            )
        except (OSError, ValueError):
            continue
        git = meta.get("git") or {}
        db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_dir.name,
                meta.get("started"),
                git.get("commit"),
                int(bool(git.get("dirty"))),
                meta.get("verdict"),
                meta.get("profile"),
                int(bool(meta.get("complete"))),
            ),
        )
        for c in results.get("criteria", []):
            db.execute(
                "INSERT OR REPLACE INTO criteria VALUES (?, ?, ?, ?)",
                (run_dir.name, c["criterion_id"], c["verdict"], c["severity"]),
            )
    db.commit()
    return db


@dataclass(frozen=True)
class HistoryRow:
    run_id: str
    started: str
    commit: str | None
    dirty: bool
    verdict: str
    profile: str


def history(evidence: Path, criterion_id: str | None = None) -> list[HistoryRow]:
    """The runs in ``evidence``, newest first (none before the first run)."""
    if not evidence.is_dir():
        return []
    db = open_index(evidence)
    try:
        if criterion_id:
            rows = db.execute(
                "SELECT r.run_id, r.started, r.commit_sha, r.dirty, c.verdict, r.profile "
                "FROM criteria c JOIN runs r USING (run_id) WHERE c.criterion_id = ? "
                "ORDER BY r.started DESC, r.run_id DESC",
                (criterion_id,),
            ).fetchall()
        else:
            rows = db.execute(
                "SELECT run_id, started, commit_sha, dirty, verdict, profile "
                "FROM runs ORDER BY started DESC, run_id DESC"
            ).fetchall()
    finally:
        db.close()
    return [
        HistoryRow(r[0], r[1] or "", r[2], bool(r[3]), r[4] or "INCOMPLETE", r[5] or "")
        for r in rows
    ]


# --------------------------------------------------------------------------- diff


def load_results(run_dir: Path) -> RunResult:
    """The run's results; a UsageError names the run and what is missing or wrong."""
    require_results(run_dir)
    try:
        return RunResult.from_dict(json.loads((run_dir / "results.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise UsageError(
            f"run {run_dir.name}: results.json cannot be read ({type(exc).__name__}: {exc})"
        ) from exc


def diff_runs(a_dir: Path, b_dir: Path) -> tuple[list[str], list[str], bool]:
    """(changes, environment differences, regressed)."""
    from harness.loader import load_contract_set
    from harness.replay import compare_runs, environment_diff

    a, b = load_results(a_dir), load_results(b_dir)
    try:
        contracts = load_contract_set([b_dir / "contracts"])
    except Exception:
        contracts = None
    changes: list[str] = []
    regressed = False
    a_by = {c.criterion_id: c for c in a.criteria}
    b_by = {c.criterion_id: c for c in b.criteria}
    rank = {Verdict.GO: 0, Verdict.UNPROVEN_FAST: 1, Verdict.UNPROVEN: 2, Verdict.NO_GO: 3}
    for cid in sorted(set(a_by) | set(b_by)):
        ca, cb = a_by.get(cid), b_by.get(cid)
        if ca is None:
            changes.append(f"{cid}: new in B ({cb.verdict.value if cb else '?'})")
            continue
        if cb is None:
            changes.append(f"{cid}: not in B (was {ca.verdict.value})")
            continue
        if ca.verdict != cb.verdict:
            worse = rank[cb.verdict] > rank[ca.verdict]
            regressed |= worse
            changes.append(
                f"{cid}: {ca.verdict.value} -> {cb.verdict.value}"
                + (" (REGRESSED)" if worse else " (improved)")
            )
    if contracts is not None:
        for line in compare_runs(contracts, a, b):
            if not line.startswith(tuple(f"{cid}:" for cid in b_by)):
                changes.append(line)
                if (
                    "-> FAIL" in line
                    or "-> ERROR" in line
                    or "-> REFUTED" in line
                    or "-> MISSED" in line
                ):
                    regressed = True
    return changes, environment_diff(a_dir, b_dir), regressed


def as_json(rows: list[HistoryRow]) -> list[dict[str, Any]]:
    return [row.__dict__ for row in rows]


def last_durations(evidence: Path) -> dict[str, float]:
    """How long each check took in the newest complete run under ``evidence``
    (seconds by invariant or falsifier ID): what ``plan.longest_first`` orders by.
    Empty when there is no such run or its results do not read."""
    try:
        runs = run_dirs(evidence)
    except OSError:  # an unreadable evidence folder: no history, the run goes on
        return {}
    for run_dir in reversed(runs):
        try:
            meta = json.loads((run_dir / "run.json").read_text())
            if not isinstance(meta, dict) or not meta.get("complete"):
                continue
            data = json.loads((run_dir / "results.json").read_text())
            out: dict[str, float] = {}
            for c in data["criteria"]:
                for r in c["invariants"]:
                    out[str(r["invariant_id"])] = float(r["duration"])
                for r in c["falsifiers"]:
                    out[str(r["falsifier_id"])] = float(r["duration"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
        return out
    return {}


def time_profile(result: RunResult, run_dir: Path, n: int) -> list[str]:
    """Where a run's time went, as lines: the run's wall time and workers, the summed
    time of its checks (and of those not run), then its ``n`` slowest checks."""
    checks: list[tuple[float, str, str, str]] = []
    for c in result.criteria:
        for inv in c.invariants:
            checks.append((inv.duration, inv.invariant_id, c.criterion_id, inv.outcome.value))
        for f in c.falsifiers:
            checks.append((f.duration, f.falsifier_id, c.criterion_id, f.outcome.value))
    ran = [x for x in checks if x[3] != "NOT_RUN"]
    total = sum(x[0] for x in ran)
    local = False
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        jobs = f"{int(meta.get('jobs') or 0)} workers"
        local = (meta.get("executor") or {}).get("name") in ("local", "LocalProcessExecutor")
    except (OSError, ValueError, TypeError, AttributeError):
        jobs = "workers unknown"
    wall: float | None
    try:
        wall = (
            datetime.fromisoformat(result.finished) - datetime.fromisoformat(result.started)
        ).total_seconds()
    except (TypeError, ValueError):
        wall = None
    walltext = "unknown" if wall is None else f"{wall:.1f} s"
    lines = [
        f"run {result.run_id} ({result.profile} profile): wall {walltext} on {jobs}; "
        f"{len(ran)} of {len(checks)} checks ran, {total:.1f} s of check time in all "
        f"({len(checks) - len(ran)} not run)"
    ]
    cpu = result.check_cpu
    measured = [cpu[x[1]] for x in ran if x[1] in cpu]
    if measured:
        used = sum(measured)
        line = (
            f"CPU {used:.1f} s in {len(measured)} of {len(ran)} checks (user + system, each "
            "with the processes it waited for)"
        )
        cores = _cores(run_dir) if local else 0
        if cores and wall:
            line += (
                f": {used / cores:.1f} s of the {cores} cores it could use, "
                f"{100 * used / cores / wall:.0f}% of the wall"
            )
        lines.append(line)
    ran.sort(key=lambda x: (-x[0], x[1]))
    if ran[:n]:
        lines.append(f"the {min(n, len(ran))} slowest ({sum(x[0] for x in ran[:n]):.1f} s):")
    for duration, key, cid, outcome in ran[:n]:
        share = f"{100 * duration / total:4.1f}%" if total else "  - "
        used_text = f"{cpu[key]:7.2f} s cpu" if key in cpu else "      - cpu"
        lines.append(f"  {duration:7.2f} s {used_text} {share}  {key:<22} {outcome:<10} {cid}")
    return lines


def _cores(run_dir: Path) -> int:
    """The CPU cores the run could use (its environment.json: the process's affinity and
    cgroup quota, else the machine's count), or 0."""
    try:
        cpu = json.loads((run_dir / "environment.json").read_text())["cpu"]
        return max(0, int(cpu.get("usable_cores") or cpu["cores"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return 0


__all__ = [
    "HistoryRow",
    "as_json",
    "diff_runs",
    "history",
    "last_durations",
    "load_results",
    "open_index",
    "resolve_run",
    "run_dirs",
    "time_profile",
]
