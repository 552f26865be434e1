"""Scaling a readiness run out: the local pool against Dask LocalClusters of 1 and 2
one-thread workers, measured in one script run, plus a simulated 100-worker schedule.

    .venv/bin/python benchmarks/scale.py [--criteria AC-A,AC-B] [--repeats 1] [--seed 7]

1. Runs a fixed selection of the slowest criteria (the default list below, or
   ``--criteria``) with ``harness run --no-evidence`` through: the local pool with
   ``-j 1`` and ``-j 2``, and ``--executor dask`` with ``-j 1`` and ``-j 2`` (a
   LocalCluster of that many one-thread worker processes), alternating the set-ups
   ``--repeats`` times; prints median wall times, the 2-over-1 speed-up of each (goal
   for Dask: >= 1.8x on 2 cores), and Dask's overhead per check against the local pool.
2. From the per-check durations of the newest complete full run in ``evidence/`` (or
   ``--from RUN``), simulates a schedule on 100 workers, longest check first (what the
   harness does): the makespan against the critical path (the longest check) and the
   sum of all checks, to say how far the current contract set could go on a cluster.

Prints the CPU model first: ratios differ between CPUs. Never a timed test.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# the slowest criteria of a readiness run here (per-check durations in the evidence)
DEFAULT = ["AC-TRAIN-001", "AC-REL-004", "AC-DATA-004", "AC-REL-005"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed_run(
    criteria: list[str], seed: int, jobs: int, executor: str
) -> tuple[float, int, int, float]:
    """Wall seconds, exit code, number of checks and CPU seconds (user + system, of the
    run and everything it started) of one run of the selection."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        argv = [str(BIN / "harness"), "run", "--no-evidence", "--seed", str(seed), "-j",
                str(jobs), "--executor", executor, "--output", f"json={out}"]  # fmt: skip
        for c in criteria:
            argv += ["--criterion", c]
        before = os.times()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        after = os.times()
        cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        checks = 0
        try:
            data = json.loads(out.read_text())
            for c in data["criteria"]:
                checks += len(c["invariants"]) + len(c["falsifiers"])
                if c["verdict"] != "GO":  # a timing is only worth as much as the run
                    print(f"    {executor} -j {jobs}: {c['criterion_id']} {c['verdict']}: "
                          f"{'; '.join(c.get('reasons', []))[:300]}")  # fmt: skip
        except (OSError, ValueError, KeyError):
            print(proc.stdout[-1500:], proc.stderr[-1500:])
    return wall, proc.returncode, checks, cpu


def durations_of(run_dir: Path) -> dict[str, float]:
    data = json.loads((run_dir / "results.json").read_text())
    out = {}
    for c in data["criteria"]:
        for r in c["invariants"]:
            out[r["invariant_id"]] = float(r["duration"])
        for r in c["falsifiers"]:
            out[r["falsifier_id"]] = float(r["duration"])
    return out


def newest_full_run(evidence: Path) -> Path | None:
    for run in sorted(evidence.iterdir(), reverse=True) if evidence.is_dir() else []:
        try:
            meta = json.loads((run / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if (
            meta.get("complete")
            and meta.get("profile") == "full"
            and not any((meta.get("selection") or {}).values())
        ):
            return run
    return None


def simulate(durations: list[float], workers: int) -> float:
    """Makespan of longest-first list scheduling on ``workers`` identical workers."""
    free = [0.0] * workers
    heapq.heapify(free)
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--criteria", default=",".join(DEFAULT))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--from", dest="source", default=None, help="a run folder for part 2")
    ap.add_argument("--skip-runs", action="store_true", help="part 2 only")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; Python {platform.python_version()}")
    criteria = [c for c in args.criteria.split(",") if c]
    if not args.skip_runs:
        setups = [("local", 1), ("local", 2), ("dask", 1), ("dask", 2)]
        walls: dict[tuple[str, int], list[float]] = {s: [] for s in setups}
        cpus: dict[tuple[str, int], list[float]] = {s: [] for s in setups}
        checks = 0
        for r in range(args.repeats):
            for executor, jobs in setups if r % 2 == 0 else list(reversed(setups)):
                wall, code, n, cpu = timed_run(criteria, args.seed, jobs, executor)
                checks = max(checks, n)
                walls[(executor, jobs)].append(wall)
                cpus[(executor, jobs)].append(cpu)
                print(f"  {executor:5} -j {jobs}: {wall:7.1f} s, {cpu:7.1f} CPU s "
                      f"(exit {code}, {n} checks)", flush=True)  # fmt: skip
        med = {s: statistics.median(v) for s, v in walls.items()}
        print(f"\n{len(criteria)} criteria ({', '.join(criteria)}), {checks} checks, "
              f"median of {args.repeats}:")  # fmt: skip
        busy = {s: statistics.median(cpus[s]) / med[s] for s in setups}
        for s in setups:
            print(f"  {s[0]:5} -j {s[1]}: {med[s]:7.1f} s, {busy[s]:.2f} CPUs busy on average")
        cores = os.cpu_count() or 1
        for executor in ("local", "dask"):
            # a -j 1 run whose checks start processes of their own already keeps more than
            # one CPU busy: on this machine two workers cannot beat cores / that
            bound = min(2.0, cores / busy[(executor, 1)])
            print(f"  {executor}: 2 workers over 1: {med[(executor, 1)] / med[(executor, 2)]:.2f}x"
                  f" (at most {bound:.2f}x on {cores} CPUs: -j 1 keeps "
                  f"{busy[(executor, 1)]:.2f} busy)"
                  + ("; goal >= 1.8x" if executor == "dask" else ""))  # fmt: skip
        if checks:
            for jobs in (1, 2):
                dask, local = med[("dask", jobs)], med[("local", jobs)]
                per_check = (dask - local) / checks * 1000
                print(f"  Dask overhead per check at -j {jobs}: {per_check:+.0f} ms "
                      f"(dask/local {dask / local:.2f}x)")  # fmt: skip
    run = Path(args.source) if args.source else newest_full_run(ROOT / "evidence")
    if run is None:
        print("\nno complete full run in evidence/ for the schedule simulation; run `harness run`")
        return 0
    d = durations_of(run)
    total, longest = sum(d.values()), max(d.values())
    print(f"\nschedule simulation from {run.name}: {len(d)} checks, sum {total:.0f} s, "
          f"longest {longest:.1f} s ({max(d, key=lambda k: d[k])})")  # fmt: skip
    for w in (1, 2, 8, 32, 100):
        span = simulate(list(d.values()), w)
        print(f"  {w:3} workers, longest first: {span:7.1f} s "
              f"(x{total / span:5.1f} over one; critical path {longest:.1f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
