"""docs/adopting.md, walked end to end (issue 15): an outside repository with its own
git and package, the tool installed from a wheel (not editable), driven through init,
new, lint, a GO run, a NO-GO run with the bug on, the --fast gate's exit codes, pytest
after a run, the GitHub outputs and step summary, the regression store, and a waiver
before and after its expiry. The test prints how long the path took."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.outside import CHECKS, CONTRACT, PACKAGE

ROOT = Path(__file__).resolve().parents[1]
BUG = PACKAGE.replace("min(max(x, lo), hi)", "max(x, lo)")  # forgets the upper bound


@pytest.mark.slow
def test_a_new_team_adopts_the_tool_from_the_guide(tmp_path: Path) -> None:
    t0 = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env = {k: v for k, v in env.items() if not k.startswith("GITHUB_")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    repo = tmp_path / "repo"

    def sh(*argv: str, code: int | None = 0, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv), cwd=repo, env={**env, **extra}, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        if code is not None:
            assert proc.returncode == code, (
                f"{argv}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    # 1. install (a wheel of this checkout, as `pip install ml-contract-harness` would)
    repo.mkdir()
    sh("python", "-m", "pip", "install", "-q", str(ROOT), "pytest")  # the team has pytest
    installed = time.monotonic()
    # the team's repository: its package, its checks folder, its git
    (repo / "mylib").mkdir()
    (repo / "mylib" / "__init__.py").write_text(PACKAGE)
    (repo / "checks").mkdir()
    (repo / "checks" / "__init__.py").write_text("")
    (repo / "checks" / "clip.py").write_text(CHECKS)
    (repo / "pyproject.toml").write_text('[project]\nname = "mylib"\nversion = "0.1"\n')
    os.chmod(repo / "pyproject.toml", 0o644)
    sh("git", "init", "-q")

    # 2. init: the .gitignore, allowed-packages for our packages, the file mode kept
    out = sh("harness", "init").stdout
    assert 'allowed-packages ["checks", "harness", "mylib"]' in out or "mylib" in out
    assert "evidence/" in (repo / ".gitignore").read_text()
    assert (repo / "pyproject.toml").stat().st_mode & 0o777 == 0o644
    text = (repo / "pyproject.toml").read_text()
    assert '"checks"' in text and '"mylib"' in text
    (repo / "contracts" / "example.yaml").unlink()  # the example, once read

    # 3. new + lint: a skeleton wired to its invariant, lint says what each TODO wants
    assert (
        "AC-CLIP-001 lists INV-CLIP-001"
        in sh("harness", "new", "criterion", "contracts/clip.yaml").stdout
    )
    lint = sh("harness", "lint", code=4)
    assert "contracts/clip.yaml:" in lint.stdout + lint.stderr
    (repo / "contracts" / "clip.yaml").write_text(CONTRACT)  # the TODOs filled in
    sh("harness", "lint")

    # 4. the readiness run: GO
    go = sh("harness", "run").stdout
    assert "1 criterion: 1 GO, 0 NO-GO, 0 UNPROVEN" in go and "release verdict: GO" in go

    # 5. pytest after a run collects nothing from the evidence
    collected = sh("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", code=None)
    assert collected.returncode in (0, 5), collected.stdout + collected.stderr
    assert "evidence" not in collected.stdout and "error" not in collected.stdout.lower()

    # 6. the bug on: NO-GO with the shrunk counterexample, kept in the committable store
    (repo / "mylib" / "__init__.py").write_text(BUG)
    nogo = sh("harness", "run", code=1).stdout
    assert "NO-GO" in nogo and "AC-CLIP-001" in nogo
    listed = sh("harness", "regressions", "list").stdout
    assert "FALSIFY-CLIP-002 #1  replayed" in listed

    # 7. the --fast gate by exit code, GitHub annotations and the step summary
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n")
    gh = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    red = sh("harness", "run", "--fast", "--output", "github", code=1, **gh).stdout
    assert "::error file=contracts/clip.yaml" in red
    (repo / "mylib" / "__init__.py").write_text(PACKAGE)
    green = sh("harness", "run", "--fast", "--output", "github", **gh).stdout
    assert "UNPROVEN-FAST" in green and "gate (--fail-on unproven): passed, exit 0" in green
    text = summary.read_text()
    assert text.startswith("## earlier step\n") and text.count("AC-CLIP-001") >= 2

    # 8. a waiver: WAIVED (never GO) and not blocking before its expiry; blocking after
    (repo / "mylib" / "__init__.py").write_text(BUG)
    waiver = (
        "    waiver: {owner: ml-platform, reason: upstream fix pending, "
        "link: 'https://tracker.example/123', expires: %s}\n"
    )
    contract = repo / "contracts" / "clip.yaml"
    base = CONTRACT.replace(
        "    invariants: [INV-CLIP-001]\n", "    invariants: [INV-CLIP-001]\n" + waiver, 1
    )
    soon = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=30)
    contract.write_text(base % soon.isoformat())  # within 90 days: max-waiver-days
    waived = sh("harness", "run").stdout
    assert "WAIVED" in waived and "1 GO" not in waived
    contract.write_text(base % "2001-01-31")
    expired = sh("harness", "run", code=1).stdout
    assert "waiver expired on 2001-01-31" in expired
    lint = sh("harness", "lint", code=None)
    assert "expired" in (lint.stdout + lint.stderr)

    took = time.monotonic() - t0
    print(f"\nadoption path: {took:.0f} s end to end ({installed - t0:.0f} s of it installing)")
