"""The CI integrations a team adopts (issue 15, item 5), tried as they ship: the GitHub
workflow and the GitLab jobs are parsed and their shell steps run here, in order, in an
outside project with the tool installed from a wheel (not editable); the pre-commit
hook runs through ``pre-commit try-repo``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.outside import PACKAGE, outside_project

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "ci" / "github-workflow.yml"
GITLAB = ROOT / "examples" / "ci" / "gitlab-ci.yml"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv; the workflow's own install step puts the tool in it."""
    where = tmp_path_factory.mktemp("ci") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where


def _env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CI_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["HARNESS_SPEC"] = str(ROOT)  # the tool of this checkout, installed as a wheel
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


# ------------------------------------------------------------------ GitHub Actions


def _github_if(expr: str, event: str, cwd: Path) -> bool:
    """The few expression forms the workflow uses: event_name comparisons, always(),
    hashFiles(path) != '' joined by &&."""
    for part in (p.strip() for p in expr.split("&&")):
        if part == "always()":
            continue
        m = re.fullmatch(r"github\.event_name (==|!=) '([a-z_]+)'", part)
        if m:
            if (event == m.group(2)) != (m.group(1) == "=="):
                return False
            continue
        m = re.fullmatch(r"hashFiles\('([^']+)'\) != ''", part)
        if m:
            if not (cwd / m.group(1)).exists():
                return False
            continue
        raise AssertionError(f"the test does not know the expression {part!r}")
    return True


def _workflow_steps() -> list[dict[str, Any]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    (job,) = doc["jobs"].values()
    return list(job["steps"])


def test_the_workflow_gates_pull_requests_fast_and_runs_readiness_on_the_default_branch():
    doc = yaml.safe_load(WORKFLOW.read_text())
    on = doc[True] if True in doc else doc["on"]  # YAML 1.1 reads `on:` as true
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    assert doc["permissions"]["security-events"] == "write"
    steps = _workflow_steps()
    runs = {s.get("name"): s for s in steps}
    assert "--fast" in runs["Merge gate (fast profile)"]["run"]
    assert "--fast" not in runs["Readiness run (full profile)"]["run"]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"  # the evidence of a failing run is uploaded too


@pytest.mark.slow
@pytest.mark.parametrize("event", ["pull_request", "push"])
def test_the_workflow_shell_steps_run_in_an_outside_project(event, venv, tmp_path):
    project = outside_project(tmp_path / "repo")
    summary = tmp_path / "step-summary.md"
    summary.write_text("## an earlier step\n")
    env = _env(venv, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary),
               GITHUB_WORKSPACE=str(project))  # fmt: skip
    ran = []
    for step in _workflow_steps():
        if "run" not in step or not _github_if(str(step.get("if", "always()")), event, project):
            continue
        proc = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=project, env=env, capture_output=True,
            text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, f"{step['name']}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        ran.append((step["name"], proc.stdout))
    names = [n for n, _ in ran]
    gate = (
        "Merge gate (fast profile)" if event == "pull_request" else "Readiness run (full profile)"
    )
    assert gate in names and len(names) == 3
    out = dict(ran)[gate]
    assert "1 criterion:" in out
    if event == "push":
        assert "1 criterion: 1 GO" in out
    else:
        assert "gate (--fail-on unproven): passed, exit 0" in out
    # what the upload steps name exists, and the summary was appended to, not replaced
    assert (project / "harness.sarif").is_file() and (project / "harness-report.html").is_file()
    assert (project / "harness-junit.xml").is_file()
    assert any((project / "evidence").iterdir())
    text = summary.read_text()
    assert text.startswith("## an earlier step\n") and "AC-CLIP-001" in text


@pytest.mark.slow
def test_the_merge_gate_step_fails_a_pull_request_that_breaks_the_contract(venv, tmp_path):
    project = outside_project(tmp_path / "repo")
    (project / "mylib" / "__init__.py").write_text(
        PACKAGE.replace("min(max(x, lo), hi)", "max(x, lo)")
    )
    env = _env(venv, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(tmp_path / "s.md"))
    for step in _workflow_steps():
        if "run" in step and _github_if(str(step.get("if", "always()")), "pull_request", project):
            proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "::error" in proc.stdout and "AC-CLIP-001" in proc.stdout


# ------------------------------------------------------------------ GitLab CI


def _gitlab_jobs() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(GITLAB.read_text())
    jobs = {}
    for name, job in doc.items():
        if name.startswith(".") or name == "variables" or not isinstance(job, dict):
            continue
        merged = {**doc.get(job.get("extends", ""), {}), **job}
        jobs[name] = merged
    return jobs


@pytest.mark.slow
def test_the_gitlab_jobs_run_their_scripts_for_their_pipelines(venv, tmp_path):
    project = outside_project(tmp_path / "repo")
    jobs = _gitlab_jobs()
    assert set(jobs) == {"harness-fast", "harness-readiness"}
    pipelines = {
        "harness-fast": {"CI_PIPELINE_SOURCE": "merge_request_event"},
        "harness-readiness": {"CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"},
    }
    for name, job in jobs.items():
        (rule,) = job["rules"]
        assert "merge_request_event" in rule["if"] or "CI_DEFAULT_BRANCH" in rule["if"]
        env = _env(venv, **pipelines[name])
        for line in [*job["before_script"], *job["script"]]:
            proc = subprocess.run(["bash", "-e", "-c", line], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=900)  # fmt: skip
            assert proc.returncode == 0, f"{name}: {line}: {proc.stdout[-2000:]}{proc.stderr}"
        assert (project / job["artifacts"]["reports"]["junit"]).is_file()
        shutil.rmtree(project / "evidence")


# ------------------------------------------------------------------ pre-commit


@pytest.mark.slow
def test_the_pre_commit_hook_lints_the_contracts(tmp_path):
    pre_commit = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    if not Path(pre_commit).exists():
        pytest.fail("pre-commit is not installed: it is in the dev extra")
    project = outside_project(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["harness-lint"]

    def try_repo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [pre_commit, "try-repo", str(ROOT), "harness-lint", "--all-files"], cwd=project,
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    good = try_repo()
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-2000:]
    assert "harness lint" in good.stdout and "Passed" in good.stdout
    contract = project / "contracts" / "clip.yaml"
    contract.write_text(
        contract.read_text().replace("target: INV-CLIP-001\n", "target: INV-NOPE\n", 1)
    )
    bad = try_repo()
    assert bad.returncode == 1 and "INV-NOPE" in bad.stdout, bad.stdout[-3000:]
