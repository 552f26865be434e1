"""The CLI through click's CliRunner (and a real subprocess where signals matter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.lint import lint_paths
from harness.model import RunResult

from .conftest import simple_contract


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_go_prints_a_line_per_criterion_and_denominators(project):
    project.contract("c", simple_contract())
    r = invoke("run", "--seed", "3", "-j", "1")
    assert r.exit_code == 0, r.output
    assert "GO" in r.output and "AC-DEMO-001" in r.output and "demo criterion" in r.output
    assert "1 criterion: 1 GO, 0 NO-GO, 0 UNPROVEN" in r.output
    assert "release verdict: GO" in r.output


def test_run_no_go_shows_failing_invariant_observed_and_expected(project):
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    r = invoke("run", "-j", "1")
    assert r.exit_code == 1
    assert "NO-GO" in r.output
    assert "INV-DEMO-001 FAIL: value: observed 1, expected >= 10" in r.output


def test_run_unproven_exits_1(project):
    project.contract("c", simple_contract(check="demochecks:skipper"))
    r = invoke("run", "-j", "1")
    assert r.exit_code == 1 and "UNPROVEN" in r.output


def test_selecting_nothing_exits_5(project):
    project.contract("c", simple_contract())
    r = invoke("run", "-k", "nomatch")
    assert r.exit_code == 5
    assert "no criterion matches" in r.output
    assert invoke("run", "--tag", "nope").exit_code == 5


def test_malformed_contract_exits_4_with_location(project):
    project.contract("c", simple_contract().replace("severity: blocker", "severity: huge"))
    r = invoke("run")
    assert r.exit_code == 4
    assert "contracts/c.yaml:6:15: error: 'severity' must be one of blocker, warn" in r.output


def test_unknown_option_exits_4(project):
    assert invoke("run", "--no-such-option").exit_code == 4


def test_internal_error_exits_3(project, monkeypatch):
    project.contract("c", simple_contract())
    import harness.runner

    def explode(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(harness.runner, "run", explode)
    r = invoke("run")
    assert r.exit_code == 3 and "internal error" in r.output


def test_outputs_json_junit_markdown_github(project, tmp_path, monkeypatch):
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = invoke(
        "run",
        "-j",
        "1",
        "--output",
        f"json={tmp_path / 'r.json'}",
        "--output",
        f"junit={tmp_path / 'r.xml'}",
        "--output",
        f"markdown={tmp_path / 'r.md'}",
        "--output",
        "github",
    )
    assert r.exit_code == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema_version"] == 1
    from jsonschema import Draft202012Validator

    schema = json.loads(
        (Path(__file__).parents[2] / "harness" / "schema" / "results-v1.json").read_text()
    )
    assert list(Draft202012Validator(schema).iter_errors(data)) == []
    back = RunResult.from_dict(data)
    assert back.to_dict() == data
    assert back.criteria[0].verdict.value == "NO-GO"
    root = ET.parse(tmp_path / "r.xml").getroot()
    failures = root.findall(".//failure")
    assert failures and "observed 1" in failures[0].get("message")
    md = (tmp_path / "r.md").read_text()
    assert "NO-GO" in md and "AC-DEMO-001" in md
    assert summary.read_text() == md
    # on the failing invariant's line (11), not the criterion's (4)
    assert "::error file=contracts/c.yaml,line=11,col=5,title=AC-DEMO-001 NO-GO::" in r.output


def test_bad_output_spec_exits_4(project):
    project.contract("c", simple_contract())
    assert invoke("run", "--output", "yaml=x").exit_code == 4
    assert invoke("run", "--output", "json").exit_code == 4


def test_evidence_layout(project):
    project.contract("c", simple_contract())
    r = invoke("run", "-j", "1", "--seed", "11")
    assert r.exit_code == 0
    runs = list((project.root / "evidence").iterdir())
    run_dir = next(p for p in runs if p.name[0].isdigit())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["complete"] is True and meta["seed"] == 11 and meta["verdict"] == "GO"
    assert len(meta["contract_digest"]) == 64
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["python"] and "numpy" in env["packages"]
    # collected by the probe, which a one-check run must not end as a stray
    assert "probe_error" not in env and len(env["dependency_digest"]) == 64
    crit = run_dir / "criteria" / "AC-DEMO-001"
    assert "AC-DEMO-001" in (crit / "criterion.yaml").read_text()
    lines = [json.loads(x) for x in (crit / "observations.jsonl").read_text().splitlines()]
    assert {x["id"] for x in lines} == {"INV-DEMO-001", "FALSIFY-DEMO-001"}


def test_lint_reports_file_line_col_and_exits_4(project):
    project.contract(
        "c",
        simple_contract(check="demochecks:no_such_check").replace(
            "invariants: [INV-DEMO-001]", "invariants: [INV-DEMO-001, INV-DEMO-404]"
        ),
    )
    r = invoke("lint")
    assert r.exit_code == 4
    assert "contracts/c.yaml:4:5: error: AC-DEMO-001 refers to INV-DEMO-404" in r.output
    assert (
        "binding does not resolve: module 'demochecks' has no attribute 'no_such_check'" in r.output
    )


def test_lint_checks_commands_and_pytest_node_ids(project):
    body = simple_contract().replace(
        "      python: demochecks:ok\n", "      command: [no-such-program-xyz]\n"
    )
    project.contract("c", body)
    r = invoke("lint")
    assert "program 'no-such-program-xyz' is not on PATH" in r.output
    (project.root / "tests").mkdir()
    (project.root / "tests" / "test_x.py").write_text("def test_a():\n    pass\n")
    body = simple_contract().replace(
        "      python: demochecks:ok\n", "      pytest: tests/test_x.py::test_missing\n"
    )
    project.contract("c", body)
    r = invoke("lint")
    assert "pytest collects no test 'tests/test_x.py::test_missing'" in r.output


def test_lint_errors_on_invariant_without_falsifier(project):
    project.contract("c", simple_contract(falsifiers=""))
    r = invoke("lint")
    assert r.exit_code == 4 and "INV-DEMO-001 has no falsifier" in r.output


def test_lint_clean_exits_0(project):
    project.contract("c", simple_contract())
    r = invoke("lint")
    assert r.exit_code == 0, r.output
    assert "0 errors" in r.output


def test_list_schema_explain(project):
    project.contract("c", simple_contract())
    r = invoke("list")
    assert "AC-DEMO-001 [blocker]" in r.output and "FALSIFY-DEMO-001 mutant" in r.output
    md = invoke("list", "--markdown").output
    assert "| AC-DEMO-001 |" in md
    schema = json.loads(invoke("schema").output)
    assert schema["$schema"].endswith("2020-12/schema")
    r = invoke("explain", "INV-DEMO-001")
    assert "defined at contracts/c.yaml:11:5" in r.output and "value ==" in r.output
    assert invoke("explain", "INV-NOPE-001").exit_code == 4


def test_init_then_new_then_lint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("hello\n")
    r = invoke("init", ".", "--owner", "qa-team")
    assert r.exit_code == 0, r.output
    assert "[tool.harness]" in (tmp_path / "pyproject.toml").read_text()
    example = tmp_path / "contracts" / "example.yaml"
    assert example.read_text().startswith("# yaml-language-server: $schema=./contract.schema.json")
    assert invoke("lint").exit_code == 0
    assert invoke("run", "-j", "1").exit_code == 0
    r = invoke("new", "criterion", "contracts/example.yaml")
    # a new criterion comes wired to a new invariant, not to a placeholder ID
    assert r.exit_code == 0 and "added AC-EXAMPLE-002 and INV-EXAMPLE-002" in r.output
    r = invoke("new", "falsifier", "contracts/example.yaml")
    assert "FALSIFY-EXAMPLE-002 (mutant) attacks INV-EXAMPLE-002" in r.output
    lint = invoke("lint")
    assert lint.exit_code == 4 and "TODO" in lint.output
    assert "CONTRIBUTING" not in lint.output + r.output
    # fill in the TODO fields: then it lints clean
    text = example.read_text()
    text = text.replace("title: TODO what a release manager signs off", "title: docs exist")
    text = text.replace("statement: TODO one or two sentences", "statement: they do")
    text = text.replace("owner: TODO team", "owner: qa")
    text = text.replace(
        'references: ["TODO document and line this comes from"]', 'references: ["checklist line 3"]'
    )
    text = text.replace("title: TODO one falsifiable statement", "title: README present")
    text = text.replace("python: TODO.module:function", "python: harness.checks.files:files_exist")
    text = text.replace("params: {}", "params: {paths: [README.md]}")
    text = text.replace("TODO_observation: {eq: true}", "missing: {eq: 0}")
    text = text.replace(
        "title: TODO the known-bad variant this check must catch",
        "title: a missing file is reported",
    )
    text = text.replace(
        'patch: {"TODO.module:name": "TODO.module:bad_name"}', "params: {paths: [nope.md]}"
    )
    example.write_text(text)
    lint = invoke("lint")
    assert lint.exit_code == 0, lint.output + text
    assert invoke("run", "-j", "1").exit_code == 0


def test_new_refuses_a_broken_file_and_keeps_it(project):
    path = project.contract("c", simple_contract().replace("severity: blocker", "severity: x"))
    before = path.read_text()
    r = invoke("new", "criterion", str(path))
    assert r.exit_code == 4
    assert path.read_text() == before


def test_new_creates_a_file_with_schema_header(project):
    r = invoke("new", "criterion", "contracts/fresh.yaml")
    assert r.exit_code == 0
    text = (project.root / "contracts" / "fresh.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=./contract.schema.json")
    assert "AC-FRESH-001" in text


def test_version_and_startup_is_light():
    code = (
        "import sys, harness.cli; "
        "heavy = [m for m in ('numba', 'numpy', 'hypothesis', 'jsonschema') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_ctrl_c_stops_cleanly_marks_evidence_incomplete_and_exits_2(project):
    body = simple_contract(check="demochecks:sleepy", timeout=60)
    project.contract("c", body)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "-j", "1"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(project.root)},
        # a shell that ran us in the background may have left SIGINT ignored; Python
        # keeps an inherited SIG_IGN, so give the run the default disposition back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 30
    while time.time() < deadline and not list((project.root / "evidence").glob("*/checks")):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    run_dir = next(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())
    assert (run_dir / "INCOMPLETE").exists()
    assert json.loads((run_dir / "run.json").read_text())["complete"] is False
    assert "interrupted" in err
    # no worker left behind
    time.sleep(0.5)
    ps = subprocess.run(["pgrep", "-f", "demochecks"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def closed_pipe(project, *args: str) -> subprocess.CompletedProcess[str]:
    """``harness ARGS`` whose stdout is a pipe nobody reads any more (``| head -1``
    gone): every write to it fails with EPIPE. stderr is captured."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            cwd=project.root,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(project.root)},
            timeout=120,
        )
    finally:
        os.close(write_end)


def test_a_closed_stdout_neither_stops_a_run_nor_changes_an_exit_code(project):
    project.contract("c", simple_contract())
    done = closed_pipe(project, "run", "-j", "1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    (run_dir,) = (p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())
    assert not (run_dir / "INCOMPLETE").exists() and (run_dir / "verdict.json").is_file()
    project.contract("c", simple_contract(expect="value: {eq: 2}"))
    done = closed_pipe(project, "run", "-j", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    for args in (["history"], ["history", "--json"], ["list"], ["lint"]):
        done = closed_pipe(project, *args)
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)


def test_the_terminal_reporter_stops_printing_when_its_stream_goes_away(project):
    """Library use: a run whose terminal reporter's stream breaks goes on and seals."""
    import io

    from harness.loader import load_contract_set
    from harness.reporters.terminal import TerminalReporter
    from harness.runner import run_contracts

    class Gone(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            Gone.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

    project.contract("c", simple_contract())
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=1,
        evidence_root=project.root / "evidence",
        root=project.root,
        outputs=(TerminalReporter(Gone()),),
    )
    assert result.verdict.value == "GO" and Gone.writes == 1
    run_dir = Path(result.evidence_dir)
    assert not (run_dir / "INCOMPLETE").exists() and (run_dir / "verdict.json").is_file()


def test_lint_api_returns_contracts_and_diagnostics(project):
    project.contract("c", simple_contract())
    contracts, diags = lint_paths([project.root / "contracts"], project.root)
    assert len(contracts) == 1 and diags == []


def test_pytest_collects_contracts_as_items(project):
    project.contract(
        "repro",
        simple_contract(cid="AC-REPRO-001", inv="INV-REPRO-001").replace(
            '"demochecks:ok": "demochecks:always_value_2"',
            '"demochecks:ok": "demochecks:always_value_2"',
        ),
    )
    project.contract(
        "other", simple_contract(cid="AC-OTHER-001", inv="INV-OTHER-001", expect="value: {ge: 5}")
    )
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "contracts/"]
    out = subprocess.run(
        [*base, "-k", "repro", "-q"], cwd=project.root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 1 deselected" in out.stdout
    junit = project.root / "j.xml"
    out = subprocess.run(
        [*base, "-q", f"--junitxml={junit}"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "AC-OTHER-001" in out.stdout and "observed 1, expected >= 5" in out.stdout
    assert ET.parse(junit).getroot().find(".//failure") is not None
    out = subprocess.run(
        [*base, "-x", "-q"], cwd=project.root, env=env, capture_output=True, text=True
    )
    assert (
        "1 failed" in out.stdout
        and "passed" not in out.stdout.splitlines()[-1]
        or "stopping" in out.stdout
    )


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["lint", "--help"]])
def test_help_exits_0(args):
    assert invoke(*args).exit_code == 0
