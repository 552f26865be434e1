"""Gating a merge in CI and what CI shows (issue 15): the --fast gate and --fail-on,
annotations and reports that follow the gate, the step summary, progress without a
terminal, and plain pytest after a run."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.judge import blocks_gate, gate_passes, release_verdict, run_exit_code
from harness.model import CriterionResult, FailOn, Location, RunResult, Verdict

from .conftest import simple_contract


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
    import json

    project.contract("c", simple_contract())
    out = tmp_path / "r.json"
    invoke("run", "--fast", "-j", "1", "--fail-on", "no-go", "--output", f"json={out}")
    assert json.loads(out.read_text())["fail_on"] == "no-go"
    assert RunResult.from_dict(json.loads(out.read_text())).fail_on == "no-go"


def test_fail_on_is_in_the_help():
    r = invoke("run", "--help")
    assert "--fail-on [no-go|unproven|unproven-fast]" in r.output
