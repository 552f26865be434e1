"""A run from a clean checkout ran the commit's bytes: sources a check imported and
contracts are compared with the commit's blobs, so a change git status cannot see
(skip-worktree, an ignored module a check imports) makes the run dirty, naming it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.loader import load_contract_set
from harness.runner import run_contracts

from .conftest import simple_contract


def _run(project) -> dict:
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts, contracts.criteria, jobs=1, seed=1, root=project.root,
        evidence_root=project.root / "evidence", default_timeout=30,
    )  # fmt: skip
    return json.loads((Path(result.evidence_dir) / "verdict.json").read_text())["git"]


def test_a_clean_run_of_committed_code_stays_clean(project):
    project.contract("a", simple_contract())
    project.commit()
    git = _run(project)
    assert git["dirty"] is False and "uncommitted" not in git


def test_a_change_git_status_hides_makes_the_run_dirty(project):
    project.contract("a", simple_contract())
    project.commit()
    checks = project.root / "demochecks.py"
    checks.write_text(checks.read_text() + "\n# weakened, and hidden from git status\n")
    subprocess.run(["git", "update-index", "--skip-worktree", "demochecks.py"],
                   cwd=project.root, check=True)  # fmt: skip
    assert subprocess.run(["git", "status", "--porcelain"], cwd=project.root,
                          capture_output=True, text=True).stdout == ""  # fmt: skip
    git = _run(project)
    assert git["dirty"] is True
    assert "demochecks.py (differs from the commit)" in git["uncommitted"]


def test_an_ignored_module_a_check_imports_makes_the_run_dirty(project):
    (project.root / "localhelp.py").write_text("VALUE = 1\n")
    (project.root / "ignoredcheck.py").write_text(
        "import localhelp\n\n\ndef check(ctx):\n    return {'value': localhelp.VALUE}\n"
    )
    project.contract("a", simple_contract(check="ignoredcheck:check", falsifiers=""))
    project.commit()
    with (project.root / ".gitignore").open("a") as fh:
        fh.write("localhelp.py\n")
    subprocess.run(["git", "rm", "-q", "--cached", "localhelp.py"], cwd=project.root, check=True)
    project.commit("ignore the helper")
    git = _run(project)
    assert git["dirty"] is True
    assert "localhelp.py (not in the commit)" in git["uncommitted"]
