"""Gating a merge in CI and what CI shows (issue 15): the --fast gate and --fail-on,
annotations and reports that follow the gate, the step summary, progress without a
terminal, and plain pytest after a run."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from email.message import Message
from importlib import metadata

import pytest
from click.testing import CliRunner
from junitparser import Error as JError
from junitparser import Failure, JUnitXml, Skipped

from harness.cli import cli
from harness.hooks import Listener
from harness.judge import (
    blocks_gate,
    failing_invariant,
    gate_passes,
    release_verdict,
    run_exit_code,
)
from harness.loader import load_contract_set
from harness.model import (
    CriterionResult,
    FailOn,
    InvariantOutcome,
    InvariantResult,
    Location,
    RunResult,
    Verdict,
)
from harness.reporters import sarif
from harness.reporters.sarif import information_uri
from harness.reporters.terminal import TerminalReporter
from harness.runner import run_contracts

from .conftest import CHECKS, GIT, PYPROJECT, Project, commit_all, simple_contract


def invoke(*args: str, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


def warn(body: str) -> str:
    return body.replace("severity: blocker", "severity: warn")


# --------------------------------------------------------------------------- the gate


def _criterion(verdict: Verdict, severity: str = "blocker", cid: str = "AC-X-001"):
    return CriterionResult(cid, "t", severity, verdict, (), (), (), Location("c.yaml", 1))


def _run(*criteria: CriterionResult, fail_on: FailOn = FailOn.UNPROVEN, interrupted=False):
    return RunResult(
        "r",
        release_verdict(criteria),
        criteria,
        1,
        "s",
        "f",
        fail_on=fail_on.value,
        interrupted=interrupted,
    )


@pytest.mark.parametrize("fail_on", list(FailOn))
@pytest.mark.parametrize("verdicts", list(itertools.product(list(Verdict), repeat=2)))
def test_the_gate_is_the_release_verdict_against_fail_on(fail_on, verdicts):
    blocker = _criterion(verdicts[0], cid="AC-X-001")
    warned = _criterion(verdicts[1], severity="warn", cid="AC-X-002")
    result = _run(blocker, warned, fail_on=fail_on)
    order = [Verdict.GO, Verdict.UNPROVEN_FAST, Verdict.UNPROVEN, Verdict.NO_GO]
    first_failing = {
        FailOn.UNPROVEN_FAST: Verdict.UNPROVEN_FAST,
        FailOn.UNPROVEN: Verdict.UNPROVEN,
        FailOn.NO_GO: Verdict.NO_GO,
    }[fail_on]
    expected = order.index(result.verdict) < order.index(first_failing)
    assert gate_passes(result) is expected
    assert run_exit_code(result) == (0 if expected else 1)
    assert not blocks_gate(warned, fail_on), "a warn criterion never fails the gate"
    assert blocks_gate(blocker, fail_on) is (not expected)


def test_an_interrupted_run_never_passes_the_gate():
    assert not gate_passes(_run(_criterion(Verdict.GO), interrupted=True))


def test_fast_run_exits_0_and_still_says_unproven_fast(project):
    project.contract("c", simple_contract())
    r = invoke("run", "--fast", "-j", "1")
    assert r.exit_code == 0, r.output
    assert "UNPROVEN-FAST AC-DEMO-001" in r.output
    assert "release verdict: UNPROVEN-FAST" in r.output
    assert "gate (--fail-on unproven): passed, exit 0" in r.output
    strict = invoke("run", "--fast", "-j", "1", "--fail-on", "unproven-fast")
    assert strict.exit_code == 1
    assert "gate (--fail-on unproven-fast): failed, exit 1" in strict.output


def test_fast_run_fails_on_what_is_unproven_for_another_reason(project):
    # a skip is not a skipped slow falsifier: UNPROVEN, exit 1 under --fast too
    project.contract("c", simple_contract(check="demochecks:skipper"))
    r = invoke("run", "--fast", "-j", "1")
    assert r.exit_code == 1, r.output
    assert "UNPROVEN      AC-DEMO-001" in r.output
    # an invariant nobody attacks is UNPROVEN whatever the profile
    project.contract("c", simple_contract(falsifiers=""))
    assert invoke("run", "--fast", "-j", "1").exit_code == 1


def test_fast_run_fails_on_no_go(project):
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    r = invoke("run", "--fast", "-j", "1")
    assert r.exit_code == 1 and "release verdict: NO-GO" in r.output


def test_fail_on_no_go_lets_an_unproven_blocker_pass(project):
    project.contract("c", simple_contract(check="demochecks:skipper"))
    assert invoke("run", "-j", "1").exit_code == 1
    r = invoke("run", "-j", "1", "--fail-on", "no-go")
    assert r.exit_code == 0, r.output
    assert "release verdict: UNPROVEN" in r.output


def test_a_warn_criterion_never_fails_the_gate(project):
    project.contract("c", warn(simple_contract(expect="value: {ge: 10}")))
    for args in ([], ["--fast"], ["--fail-on", "unproven-fast"]):
        r = invoke("run", "-j", "1", *args)
        assert r.exit_code == 0, (args, r.output)
        assert "NO-GO         AC-DEMO-001" in r.output


def test_fail_on_is_recorded_in_the_results(project, tmp_path):
    project.contract("c", simple_contract())
    out = tmp_path / "r.json"
    invoke("run", "--fast", "-j", "1", "--fail-on", "no-go", "--output", f"json={out}")
    assert json.loads(out.read_text())["fail_on"] == "no-go"
    assert RunResult.from_dict(json.loads(out.read_text())).fail_on == "no-go"


def test_fail_on_is_in_the_help():
    r = invoke("run", "--help")
    assert "--fail-on [no-go|unproven|unproven-fast]" in r.output


# ------------------------------------------------------------------ reports follow the gate


def _two_criteria(project):
    """AC-DEMO-001: a blocker, UNPROVEN (its check skips); AC-DEMO-002: a warn
    criterion, NO-GO. The invariant of each is on line 11 of its file."""
    project.contract("a", simple_contract(check="demochecks:skipper"))
    project.contract(
        "b", warn(simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002", expect="value: {ge: 10}"))
    )


def test_failing_invariant_is_the_one_the_first_reason_names():
    inv = InvariantResult("INV-A-001", InvariantOutcome.FAIL, {}, (), 0.0, 1, "x")
    c = CriterionResult(
        "AC-A-001",
        "t",
        "blocker",
        Verdict.NO_GO,
        ("INV-A-001 FAIL: x",),
        (inv,),
        (),
        Location("c.yaml", 1),
    )
    assert failing_invariant(c) == "INV-A-001"
    assert failing_invariant(_criterion(Verdict.UNPROVEN)) is None


def test_github_annotations_follow_the_gate_and_point_at_the_invariant(project):
    _two_criteria(project)
    r = invoke("run", "-j", "1", "--output", "github")
    assert r.exit_code == 1, r.output
    assert (
        "::error file=contracts/a.yaml,line=11,col=5,title=AC-DEMO-001 UNPROVEN::"
        "INV-DEMO-001 SKIP: needs a GPU" in r.output
    )
    assert (
        "::warning file=contracts/b.yaml,line=11,col=5,title=AC-DEMO-002 NO-GO "
        "(reported only; a warn criterion never fails the run)::INV-DEMO-002 FAIL" in r.output
    )
    # the blocker UNPROVEN is only reported when --fail-on lets it pass
    r = invoke("run", "-j", "1", "--output", "github", "--fail-on", "no-go")
    assert r.exit_code == 0, r.output
    assert "::warning file=contracts/a.yaml,line=11,col=5,title=AC-DEMO-001 UNPROVEN " in r.output
    assert "::error" not in r.output


def test_github_fast_run_gives_one_notice_not_a_warning_per_criterion(project):
    project.contract("c", simple_contract())
    r = invoke("run", "--fast", "-j", "1", "--output", "github")
    assert r.exit_code == 0, r.output
    assert "::warning" not in r.output and "::error" not in r.output
    assert "::notice title=harness --fast::1 criteria UNPROVEN-FAST" in r.output


def _repo_with_project_below(tmp_path, monkeypatch):
    """A git repository whose harness project is the folder ml/ in it."""

    repo = tmp_path / "repo"
    root = repo / "ml"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "demochecks.py").write_text(CHECKS)
    subprocess.run([*GIT, "init", "-q"], cwd=repo, check=True)
    monkeypatch.syspath_prepend(str(root))
    return repo, Project(root)


def junit_files(path) -> set[str | None]:
    return {case.get("file") for case in ET.parse(path).getroot().iter("testcase")}


def test_annotation_sarif_and_junit_paths_are_relative_to_the_repository_root(
    tmp_path, monkeypatch
):
    repo, project = _repo_with_project_below(tmp_path, monkeypatch)
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    for cwd in (repo / "ml", repo / "ml" / "contracts"):
        monkeypatch.chdir(cwd)
        out, xml = tmp_path / "r.sarif", tmp_path / "r.xml"
        r = invoke("run", "-j", "1", "--no-evidence", "--output", "github",
                   f"--output=sarif={out}", f"--output=junit={xml}")  # fmt: skip
        assert r.exit_code == 1 and "INV-DEMO-001 FAIL" in r.output, r.output
        assert "::error file=ml/contracts/c.yaml,line=11,col=5," in r.output, (cwd, r.output)
        results = json.loads(out.read_text())["runs"][0]["results"]
        uris = {x["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for x in results}
        assert uris == {"ml/contracts/c.yaml"}, cwd
        assert junit_files(xml) == {"ml/contracts/c.yaml"}, cwd


def test_junit_paths_are_relative_to_the_repository_root_from_a_subfolder(
    project, tmp_path, monkeypatch
):
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    commit_all(project.root)
    for cwd in (project.root, project.root / "contracts"):
        monkeypatch.chdir(cwd)
        xml = tmp_path / "r.xml"
        r = invoke("run", "-j", "1", "--no-evidence", "--output", f"junit={xml}")
        assert r.exit_code == 1, r.output
        assert junit_files(xml) == {"contracts/c.yaml"}, cwd


def test_annotation_paths_without_git_are_relative_to_the_project_root(project, monkeypatch):
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    monkeypatch.chdir(project.root / "contracts")
    r = invoke("run", "-j", "1", "--no-evidence", "--output", "github")
    assert "::error file=contracts/c.yaml,line=11,col=5," in r.output, r.output


def test_junit_agrees_with_the_exit_code_on_warn_criteria(project, tmp_path):
    project.contract("a", simple_contract())
    project.contract(
        "b", warn(simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002", expect="value: {ge: 10}"))
    )
    out = tmp_path / "r.xml"
    r = invoke("run", "-j", "1", "--output", f"junit={out}")
    assert r.exit_code == 0 and "release verdict: GO" in r.output, r.output
    cases = [case for suite in JUnitXml.fromfile(str(out)) for case in suite]
    assert not [c for c in cases if any(isinstance(x, (Failure, JError)) for x in c.result)]
    skipped = {c.name: c.result[0].message for c in cases if c.result}
    assert skipped == {
        "INV-DEMO-002": "AC-DEMO-002 is NO-GO, reported only (a warn criterion: does not fail "
        "the run): FAIL: value: observed 1, expected >= 10 (out of bounds)"
    }
    assert all(isinstance(c.result[0], Skipped) for c in cases if c.result)
    suite = ET.parse(out).getroot().find("testsuite[@name='AC-DEMO-002 demo criterion']")
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"
    assert suite.find("properties/property[@name='fails_run']").get("value") == "false"
    # a blocker that fails the run still fails its case
    project.contract("a", simple_contract(expect="value: {ge: 10}"))
    assert invoke("run", "-j", "1", "--output", f"junit={out}").exit_code == 1
    failed = [c for s in JUnitXml.fromfile(str(out)) for c in s if c.result]
    assert any(isinstance(c.result[0], Failure) for c in failed if c.name == "INV-DEMO-001")


def test_pytest_items_agree_with_the_exit_code(project):
    _two_criteria(project)
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "contracts/", "-q", "-rx"]
    out = subprocess.run(base, cwd=project.root, env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed, 1 xfailed" in out.stdout
    assert (
        "XFAIL contracts/b.yaml::AC-DEMO-002 - NO-GO, reported only (a warn criterion): "
        "INV-DEMO-002 FAIL" in out.stdout
    )
    out = subprocess.run(
        [*base, "--harness-fail-on", "no-go"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 xfailed" in out.stdout
    assert "UNPROVEN, reported only (--harness-fail-on no-go): INV-DEMO-001 SKIP" in out.stdout


def test_sarif_levels_uri_and_fingerprints(project, tmp_path, monkeypatch):
    _two_criteria(project)
    logs = []
    for seed in ("1", "2"):
        out = tmp_path / f"r{seed}.sarif"
        invoke("run", "-j", "1", "--seed", seed, "--output", f"sarif={out}")
        logs.append(json.loads(out.read_text()))
    text = json.dumps(logs[0])
    assert "example.invalid" not in text
    driver = logs[0]["runs"][0]["tool"]["driver"]
    assert driver.get("informationUri") == sarif.information_uri()
    results = logs[0]["runs"][0]["results"]
    level = {(r["ruleId"], r["message"]["text"].split(":")[0]): r["level"] for r in results}
    assert level[("INV-DEMO-001", "INV-DEMO-001 SKIP (AC-DEMO-001)")] == "note"
    assert level[("AC-DEMO-001", "AC-DEMO-001 UNPROVEN")] == "error"  # fails the run
    assert level[("INV-DEMO-002", "INV-DEMO-002 FAIL (AC-DEMO-002)")] == "warning"  # warn
    assert level[("AC-DEMO-002", "AC-DEMO-002 NO-GO")] == "warning"
    prints = [r["partialFingerprints"]["harnessResult/v1"] for r in results]
    assert len(set(prints)) == len(prints)
    assert prints == [
        r["partialFingerprints"]["harnessResult/v1"] for r in logs[1]["runs"][0]["results"]
    ], "a fingerprint does not depend on the run"


def test_sarif_information_uri_comes_from_the_project_urls(monkeypatch):
    meta = Message()
    meta["Name"] = "ml-contract-harness"
    meta["Project-URL"] = "Changelog, https://example.org/changes"
    meta["Project-URL"] = "Source, https://example.org/src"
    monkeypatch.setattr(metadata, "metadata", lambda name: meta)
    assert information_uri() == "https://example.org/src"
    monkeypatch.setattr(metadata, "metadata", lambda name: Message())
    assert information_uri() is None


# ------------------------------------------------------------------ the step summary


@pytest.fixture
def step_summary(tmp_path, monkeypatch):
    """A GitHub Actions step summary file an earlier step already wrote to."""
    path = tmp_path / "step_summary.md"
    path.write_text("## an earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    return path


def _tables(text: str) -> int:
    return text.count("| verdict | criterion | title | severity | reason |")


def test_github_output_appends_the_summary_to_the_step_summary(project, step_summary):
    project.contract("c", simple_contract())
    r = invoke("run", "--fast", "-j", "1", "--output", "github")
    assert r.exit_code == 0, r.output
    text = step_summary.read_text()
    assert text.startswith("## an earlier step\n\n## Release verdict: ⏩ UNPROVEN-FAST")
    assert _tables(text) == 1 and "| ⏩ UNPROVEN-FAST | AC-DEMO-001 |" in text
    assert "Gate (`--fail-on unproven`): passed, exit 0." in text
    invoke("run", "--fast", "-j", "1", "--output", "github")
    assert _tables(step_summary.read_text()) == 2, "a second step appends again"


@pytest.mark.parametrize("with_github", [False, True])
def test_markdown_output_naming_the_step_summary_appends_once(project, step_summary, with_github):
    project.contract("c", simple_contract())
    assert step_summary.parent == project.root  # named relatively, it is still the same file
    args = ["run", "-j", "1", "--output", f"markdown={step_summary.name}"]
    r = invoke(*args, *(["--output", "github"] if with_github else []))
    assert r.exit_code == 0, r.output
    text = step_summary.read_text()
    assert text.startswith("## an earlier step\n") and _tables(text) == 1


def test_markdown_output_elsewhere_writes_its_file_and_the_step_summary_once(
    project, step_summary, tmp_path
):
    project.contract("c", simple_contract())
    md = tmp_path / "r.md"
    md.write_text("old content\n")
    invoke("run", "-j", "1", "--output", f"markdown={md}", "--output", "github")
    assert md.read_text().startswith("## Release verdict: ✅ GO")  # replaced, as asked
    text = step_summary.read_text()
    assert text.startswith("## an earlier step\n") and _tables(text) == 1


def test_no_step_summary_without_github_or_markdown_output(project, step_summary, tmp_path):
    project.contract("c", simple_contract())
    invoke("run", "-j", "1", "--output", f"json={tmp_path / 'r.json'}")
    assert step_summary.read_text() == "## an earlier step\n"


# ------------------------------------------------------------------ progress without a terminal


class _Probe(Listener):
    """What the terminal reporter had written when each event fired."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream
        self.seen: list[tuple[str, str]] = []

    def criterion_finished(self, result: CriterionResult) -> None:
        self.seen.append((result.criterion_id, self.stream.getvalue()))


def test_without_a_terminal_each_line_is_printed_as_its_criterion_finishes(project):
    project.contract("a", simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002"))
    project.contract("b", simple_contract(check="demochecks:skipper"))
    contracts = load_contract_set([project.root / "contracts"])
    stream = io.StringIO()  # not a TTY, as in a CI log
    probe = _Probe(stream)
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=2,
        seed=7,
        root=project.root,
        default_timeout=30,
        outputs=(TerminalReporter(stream=stream), probe),
    )
    for n, (cid, written) in enumerate(probe.seen, start=1):
        # the line of the criterion that just finished is already out, before the run ends
        assert f"[{n}/2] " in written and cid in written.splitlines()[-1]
        assert "release verdict" not in written
    out = stream.getvalue()
    progress, _, summary = out.partition("summary, in the contracts' order:\n")
    assert progress.count("[") == 2
    lines = summary.splitlines()
    assert lines[0].startswith("GO ") and "AC-DEMO-002" in lines[0]  # a.yaml first
    assert lines[1].startswith("UNPROVEN ") and "AC-DEMO-001" in lines[1]
    assert "release verdict: UNPROVEN" in out and result.verdict is Verdict.UNPROVEN


def test_the_cli_prints_progress_then_the_summary_in_a_log(project):
    project.contract("c", simple_contract())
    r = invoke("run", "-j", "1")
    assert r.output.index("[1/1] GO ") < r.output.index("summary, in the contracts' order:")
    assert r.output.index("summary, in the contracts' order:") < r.output.index("release verdict")


# ------------------------------------------------------------------ plain pytest after a run

SCHEMA_LINE = "# yaml-language-server: $schema=./contract.schema.json\n"


def test_plain_pytest_after_a_run_never_collects_what_the_harness_wrote(project):
    # the schema line (as harness init and new write it) makes any copy look like a contract
    path = project.contract("c", simple_contract())
    path.write_text(SCHEMA_LINE + path.read_text())
    assert invoke("run", "-j", "1").exit_code == 0
    # a bundle written where the configuration does not say (--evidence-dir)
    assert invoke("run", "-j", "1", "--evidence-dir", "elsewhere/ev").exit_code == 0
    bundles = [p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit()]
    bundles += list((project.root / "elsewhere" / "ev").iterdir())
    assert len(bundles) == 2
    for bundle in bundles:
        assert list(bundle.glob("contracts/**/c.yaml")), "the run stored its contract copy"
        # what a check attaches lands in the bundle too: never a test of the project's
        (bundle / "criteria" / "test_attached.py").write_text("def test_x():\n    assert 0\n")
    (project.root / ".harness").mkdir(exist_ok=True)
    (project.root / ".harness" / "test_cache.py").write_text("def test_y():\n    assert 0\n")
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout and "error" not in out.stdout.lower()
    assert "PASSED contracts/c.yaml::AC-DEMO-001" in out.stdout
    assert "evidence" not in out.stdout and "elsewhere" not in out.stdout


def test_the_plugin_ignores_nothing_in_a_project_that_does_not_use_the_harness(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "0"\n')
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "test_mine.py").write_text("def test_a():\n    pass\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout + out.stderr
