"""Harness overhead vs pytest, measured in one run (medians of alternating repeats).

    .venv/bin/python benchmarks/harness_overhead.py [--n 500] [--repeats 5] [--against DIR]

Runs N trivial invariants through `harness run` and N trivial tests through
`pytest` in the same temporary project, alternately, and prints the median
wall times and their ratio; then the start-up time of `harness --version`
against `python -c pass`. Goals (issue 2): ratio <= 1.0, start-up < 0.3 s.
``--against DIR`` also times the harness of another checkout (e.g. a
``git worktree`` of the previous commit) in the same alternation, with and
without evidence, to measure what a change costs (issue 12: a fresh process per
check, aim <= 10%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def make_project(root: Path, n: int) -> None:
    (root / "pyproject.toml").write_text(
        '[project]\nname = "bench"\nversion = "0"\n\n[tool.harness]\ncontracts = ["contracts"]\n'
    )
    (root / "benchchecks.py").write_text("def trivial(ctx):\n    return {'ok': True}\n")
    per = 10
    lines = ["version: 1", "contract: {name: bench, title: overhead benchmark}", "criteria:"]
    for c in range(n // per):
        ids = ", ".join(f"INV-B-{c * per + i:04d}" for i in range(per))
        lines += [
            f"  - id: AC-B-{c:04d}",
            f"    title: batch {c}",
            "    severity: blocker",
            "    references: [benchmark]",
            f"    invariants: [{ids}]",
        ]
    lines.append("invariants:")
    for i in range(n):
        lines += [
            f"  - id: INV-B-{i:04d}",
            "    title: trivial",
            "    check: {python: 'benchchecks:trivial'}",
            "    expect: {ok: {eq: true}}",
        ]
    (root / "contracts").mkdir()
    (root / "contracts" / "bench.yaml").write_text("\n".join(lines) + "\n")
    (root / "tests").mkdir()
    body = "".join(f"def test_{i}():\n    assert True\n\n" for i in range(n))
    (root / "tests" / "test_bench.py").write_text(body)


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--against", type=Path, help="another checkout's harness, timed alike")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, args.n)
        harness_cmd = [str(BIN / "harness"), "run", "--no-evidence"]
        harness_ev = [str(BIN / "harness"), "run", "--evidence-dir", str(root / "ev")]
        pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
        runs: dict[str, list[float]] = {"harness": [], "harness+evidence": [], "pytest": []}
        other_env = None
        if args.against:
            runs["against"] = []
            runs["against+evidence"] = []
            other_env = {**os.environ, "PYTHONPATH": str(args.against.resolve())}
        for _ in range(args.repeats):
            runs["pytest"].append(timed(pytest_cmd, root))
            runs["harness"].append(timed(harness_cmd, root))
            runs["harness+evidence"].append(timed(harness_ev, root))
            if other_env is not None:
                other = [sys.executable, "-m", "harness.cli", "run", "--no-evidence"]
                runs["against"].append(timed(other, root, other_env))
                other_ev = [*other[:-1], "--evidence-dir", str(root / "ev-against")]  # own history
                runs["against+evidence"].append(timed(other_ev, root, other_env))
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"{args.n} trivial checks, median of {args.repeats} alternating runs:")
        for k, v in med.items():
            print(f"  {k:<18} {v:7.3f} s   ratio to pytest {v / med['pytest']:.2f}")
        if "against" in med:
            print(
                f"  harness / against: {med['harness'] / med['against']:.2f}, with evidence "
                f"{med['harness+evidence'] / med['against+evidence']:.2f} ({args.against})"
            )
        start_h, start_py = [], []
        for _ in range(10):
            start_py.append(timed([sys.executable, "-c", "pass"], root))
            start_h.append(timed([str(BIN / "harness"), "--version"], root))
        h, p = statistics.median(start_h), statistics.median(start_py)
        print(
            f"start-up: harness --version {h:.3f} s, python -c pass {p:.3f} s "
            f"(harness's own share {h - p:.3f} s; goal < 0.3 s)"
        )


if __name__ == "__main__":
    main()
