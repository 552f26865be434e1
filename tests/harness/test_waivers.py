"""Waivers (issue 15, item 8): a known failure accepted until a date. A waived
criterion is reported WAIVED (never GO) with its own verdict and reasons kept, blocks
neither the release verdict nor the gate until its expiry date, and blocks again from
that date on; lint flags an expired waiver; every report shows WAIVED."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator, Draft202012Validator
from junitparser import Failure, JUnitXml, Skipped

from harness.cli import cli
from harness.errors import ContractError
from harness.judge import (
    apply_waiver,
    blocks_gate,
    gate_passes,
    release_verdict,
    run_exit_code,
    today_utc,
)
from harness.lint import lint_paths
from harness.loader import load_contract, load_contract_set
from harness.model import (
    WAIVED,
    CriterionResult,
    FailOn,
    Location,
    RunResult,
    Verdict,
    Waiver,
    WaiverStatus,
)
from harness.reporters.github import annotation_lines
from harness.reporters.html import render_html
from harness.reporters.junit import junit_xml
from harness.reporters.markdown import markdown_summary
from harness.reporters.sarif import sarif_log
from harness.runner import run_contracts
from harness.signing import generate_keypair, load_public_key, load_signer
from harness.verify import verify_run

from .conftest import simple_contract

SCHEMAS = Path(__file__).parents[2] / "harness" / "schema"
EXPIRES = "2027-01-31"
# a waiver that holds when the test runs (within [tool.harness] max-waiver-days of today)
SOON = (today_utc() + datetime.timedelta(days=30)).isoformat()
LINK = "https://tracker.example/issues/42"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def waived(body: str, expires: str = EXPIRES, cid: str = "AC-DEMO-001") -> str:
    """``body`` (a simple_contract) with a waiver on its criterion, in block style."""
    inv = "INV-" + cid[3:]
    return body.replace(
        f"    invariants: [{inv}]\n",
        f"    invariants: [{inv}]\n"
        "    waiver:\n"
        "      owner: alice\n"
        "      reason: value is 1 until the fix lands\n"
        f"      link: {LINK}\n"
        f"      expires: {expires}\n",
    )


def failing(cid: str = "AC-DEMO-001", expires: str = EXPIRES) -> str:
    inv = "INV-" + cid[3:]
    return waived(simple_contract(expect="value: {ge: 10}", cid=cid, inv=inv), expires, cid)


def run_on(project, day: datetime.date, **options) -> RunResult:
    contracts = load_contract_set([project.root / "contracts"])
    return run_contracts(
        contracts, contracts.criteria, jobs=1, seed=1, root=project.root, today=day, **options
    )


# --------------------------------------------------------------------------- the judgement


def _result(verdict: Verdict, severity: str = "blocker", cid: str = "AC-X-001"):
    reasons = () if verdict is Verdict.GO else ("INV-X-001 FAIL: value: observed 1",)
    return CriterionResult(cid, "t", severity, verdict, reasons, (), (), Location("c.yaml", 1))


WAIVER = Waiver("alice", "known", LINK, EXPIRES)


def test_a_waiver_holds_before_its_expiry_date_and_not_from_it():
    expires = datetime.date.fromisoformat(EXPIRES)
    day_before = expires - datetime.timedelta(days=1)
    no_go = _result(Verdict.NO_GO)
    before = apply_waiver(no_go, WAIVER, day_before)
    assert before.waived and before.label == WAIVED
    assert before.verdict is Verdict.NO_GO and before.reasons == no_go.reasons
    assert before.waiver is not None and before.waiver.status is WaiverStatus.ACTIVE
    for day in (expires, expires + datetime.timedelta(days=400)):
        after = apply_waiver(no_go, WAIVER, day)
        assert not after.waived and after.label == "NO-GO"
        assert after.waiver is not None and after.waiver.status is WaiverStatus.EXPIRED
        assert after.waiver.note() == (f"waiver expired on {EXPIRES} (alice: known, {LINK})")
    go = apply_waiver(_result(Verdict.GO), WAIVER, day_before)
    assert go.label == "GO" and not go.waived
    assert go.waiver is not None and go.waiver.status is WaiverStatus.UNUSED
    assert "waiver unused" in go.waiver.note()
    assert apply_waiver(no_go, None, day_before) is no_go


@pytest.mark.parametrize("fail_on", list(FailOn))
@pytest.mark.parametrize("verdict", [Verdict.NO_GO, Verdict.UNPROVEN, Verdict.UNPROVEN_FAST])
def test_a_waived_criterion_never_blocks_and_an_expired_one_blocks_as_before(fail_on, verdict):
    expires = datetime.date.fromisoformat(EXPIRES)
    plain = _result(verdict)
    holds = apply_waiver(plain, WAIVER, expires - datetime.timedelta(days=1))
    expired = apply_waiver(plain, WAIVER, expires)
    assert not blocks_gate(holds, fail_on)
    assert blocks_gate(expired, fail_on) is blocks_gate(plain, fail_on)
    go = _result(Verdict.GO, cid="AC-X-002")
    assert release_verdict([holds, go]) is Verdict.GO
    assert release_verdict([expired, go]) is release_verdict([plain, go])
    run = RunResult("r", release_verdict([holds, go]), (holds, go), 1, "s", "f", fail_on=fail_on)
    assert gate_passes(run) and int(run_exit_code(run)) == 0


def test_the_denominators_never_count_waived_as_go():
    expires = datetime.date.fromisoformat(EXPIRES) - datetime.timedelta(days=1)
    rows = (
        apply_waiver(_result(Verdict.NO_GO, cid="AC-X-001"), WAIVER, expires),
        _result(Verdict.GO, cid="AC-X-002"),
        _result(Verdict.UNPROVEN, cid="AC-X-003", severity="warn"),
        apply_waiver(_result(Verdict.GO, cid="AC-X-004"), WAIVER, expires),
    )
    run = RunResult("r", release_verdict(rows), rows, 1, "s", "f")
    assert run.counts() == {"GO": 2, "NO-GO": 0, "UNPROVEN": 1, "UNPROVEN-FAST": 0, WAIVED: 1}
    assert run.summary_line() == "4 criteria: 2 GO, 0 NO-GO, 1 UNPROVEN, 1 WAIVED"
    assert "WAIVED" not in RunResult("r", Verdict.GO, rows[1:2], 1, "s", "f").summary_line()


# --------------------------------------------------------------------------- the contract


def test_a_waiver_is_read_with_the_line_of_its_expiry(project):
    path = project.contract("c", failing())
    criterion = load_contract(path).criteria[0]
    assert criterion.waiver == Waiver("alice", "value is 1 until the fix lands", LINK, EXPIRES)
    assert criterion.waiver.location is not None
    assert criterion.waiver.location.line == 14  # expires: ...
    flow = failing().replace(
        "    waiver:\n      owner: alice\n      reason: value is 1 until the fix lands\n"
        f"      link: {LINK}\n      expires: {EXPIRES}\n",
        f'    waiver: {{owner: alice, reason: "r", link: "{LINK}", expires: "{EXPIRES}"}}\n',
    )
    assert load_contract(project.contract("c", flow)).criteria[0].waiver.expires == EXPIRES


@pytest.mark.parametrize(
    ("change", "message", "hint"),
    [
        (
            ("      expires: 2027-01-31\n", ""),
            "11:7: error: missing required key 'expires' [at criteria[0].waiver]",
            "add expires: a date, YYYY-MM-DD",
        ),
        (
            ("      owner: alice\n", ""),
            "11:7: error: missing required key 'owner' [at criteria[0].waiver]",
            "add owner: who answers for the waiver",
        ),
        (
            (f"link: {LINK}", "link: tracker.example/issues/42"),
            "13:13: error: 'link' 'tracker.example/issues/42' is not an http:// or https:// "
            "address [at criteria[0].waiver.link]",
            "link: the http(s):// address of the issue",
        ),
        (
            ("expires: 2027-01-31", "expires: 31/01/2027"),
            "14:16: error: 'expires' '31/01/2027' is not a date written YYYY-MM-DD "
            "[at criteria[0].waiver.expires]",
            "expires: a date, YYYY-MM-DD (e.g. 2027-01-31)",
        ),
        (
            ("expires: 2027-01-31", "expires: 2027-02-30"),
            "14:16: error: 'expires' '2027-02-30' is not a date (day is out of range for month)",
            "expires: a date, YYYY-MM-DD",
        ),
        (
            ("expires: 2027-01-31", "expires: 20270131"),
            "14:16: error: 'expires' must be of type string (got int 20270131)",
            "expires: a date, YYYY-MM-DD",
        ),
        (
            ("reason: value is 1 until the fix lands", "reason: ''"),
            "12:15: error: 'reason' must not be empty [at criteria[0].waiver.reason]",
            "reason: why the failure is accepted for now",
        ),
        (
            ("expires: 2027-01-31", "expire: 2027-01-31"),
            "14:7: error: unknown key 'expire' [at criteria[0].waiver.expire]",
            "did you mean 'expires'?",
        ),
        (
            ("      owner: alice\n", "      owner: alice\n      ticket: 42\n"),
            "12:7: error: unknown key 'ticket' [at criteria[0].waiver.ticket]",
            "a waiver has exactly these keys: waiver: {owner: NAME, reason: WHY, "
            "link: https://..., expires: YYYY-MM-DD}",
        ),
    ],
)
def test_a_malformed_waiver_is_one_line_naming_what_to_change(project, change, message, hint):
    body = failing().replace(*change)
    project.contract("c", body)
    r = invoke("lint")
    assert r.exit_code == 4
    errors = [line for line in r.output.splitlines() if ": error: " in line]
    assert any(line.startswith("contracts/c.yaml:" + message) for line in errors), r.output
    assert all(f"(hint: {hint}" in line for line in errors if message in line), r.output
    assert invoke("run", "-j", "1").exit_code == 4  # nothing runs on a malformed waiver


def test_a_waiver_that_is_not_a_mapping_says_the_form(project):
    project.contract("c", simple_contract().replace("    tags:", "    waiver: yes\n    tags:"))
    with pytest.raises(ContractError) as err:
        load_contract(project.root / "contracts" / "c.yaml")
    (d,) = err.value.diagnostics
    assert d.format() == (
        "contracts/c.yaml:8:13: error: 'waiver' must be of type object (got bool True) "
        "[at criteria[0].waiver] (hint: write waiver: {owner: NAME, reason: WHY, "
        "link: https://..., expires: YYYY-MM-DD})"
    )


# --------------------------------------------------------------------------- lint


def test_lint_warns_on_an_expired_waiver_only(project):
    project.contract("c", failing(expires="2026-06-01"))
    before = datetime.date(2026, 5, 31)
    _, diags = lint_paths([project.root / "contracts"], project.root, today=before)
    assert diags == []
    _, diags = lint_paths(
        [project.root / "contracts"], project.root, today=before.replace(day=1, month=6)
    )
    (d,) = diags
    assert d.severity == "warning"
    assert d.format() == (
        "contracts/c.yaml:14:16: warning: AC-DEMO-001's waiver expired on 2026-06-01: the "
        "criterion blocks again when it is not GO [at AC-DEMO-001.waiver.expires] (hint: fix "
        "the failure and remove the waiver, or (with alice) set a new expires date)"
    )


def test_a_waiver_dated_beyond_max_waiver_days_is_a_contract_error_for_run_and_lint(project):
    """A waiver passes the gate and can leave the release verdict GO: one dated years
    ahead would do so for good. More than [tool.harness] max-waiver-days (90) after
    today is an error at its expires: line, naming the latest date allowed; nothing runs."""
    today = today_utc()
    far = (today + datetime.timedelta(days=91)).isoformat()
    latest = (today + datetime.timedelta(days=90)).isoformat()
    project.contract("c", failing(expires=far))
    for command in (("lint",), ("run", "-j", "1")):
        r = invoke(*command)
        assert r.exit_code == 4, r.output
        assert (
            f"contracts/c.yaml:14:16: error: AC-DEMO-001's waiver runs 91 days, to {far}: a "
            f"waiver may run at most 90 days from today ({today.isoformat()}) [at "
            f"AC-DEMO-001.waiver.expires] (hint: set expires on or before {latest} and renew "
            "it then, or raise [tool.harness] max-waiver-days)" in r.output
        )
    assert not (project.root / "evidence").exists() or not any(
        p.name[0].isdigit() for p in (project.root / "evidence").iterdir()
    )  # nothing was run, nothing written
    project.contract("c", failing(expires=latest))  # 90 days: holds
    assert invoke("run", "-j", "1").exit_code == 0
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "max-waiver-days = 365\n")
    project.contract("c", failing(expires=far))
    assert invoke("run", "-j", "1").exit_code == 0, "a project may allow longer waivers"
    pyproject.write_text(pyproject.read_text().replace("= 365", "= 0"))
    r = invoke("run", "-j", "1")
    assert r.exit_code == 4 and "max-waiver-days must be a whole number of days >= 1" in r.output


def test_lint_of_an_expired_waiver_exits_0_with_a_warning(project):
    """lint has no strict mode: an expired waiver is a warning; the run is what fails."""
    project.contract("c", failing(expires="2000-01-01"))
    r = invoke("lint")
    assert r.exit_code == 0, r.output
    assert "AC-DEMO-001's waiver expired on 2000-01-01" in r.output
    assert "0 errors, 1 warnings" in r.output


# --------------------------------------------------------------------------- runs


def test_before_its_expiry_a_waived_failure_is_waived_and_the_run_passes(project, tmp_path):
    project.contract("c", failing(expires=SOON))
    project.contract("d", simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002"))
    out = tmp_path / "r.json"
    r = invoke("run", "-j", "1", "--output", f"json={out}")
    assert r.exit_code == 0, r.output
    assert (
        "WAIVED        AC-DEMO-001        demo criterion — NO-GO: INV-DEMO-001 FAIL: value: "
        f"observed 1, expected >= 10 (out of bounds); waived until {SOON} by alice: value "
        f"is 1 until the fix lands ({LINK})" in r.output
    )
    assert "2 criteria: 1 GO, 0 NO-GO, 0 UNPROVEN, 1 WAIVED" in r.output
    assert "release verdict: GO" in r.output and "1 WAIVED, not blocking" in r.output
    data = json.loads(out.read_text())
    schema = json.loads((SCHEMAS / "results-v1.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(data)) == []
    assert data["verdict"] == "GO"
    row = data["criteria"][0]
    assert row["verdict"] == "NO-GO" and row["reasons"][0].startswith("INV-DEMO-001 FAIL")
    assert row["waiver"] == {
        "owner": "alice",
        "reason": "value is 1 until the fix lands",
        "link": LINK,
        "expires": SOON,
        "status": "active",
    }
    assert "waiver" not in data["criteria"][1]  # optional: absent without one
    back = RunResult.from_dict(data)
    assert back.to_dict() == data and back.criteria[0].waived


def test_after_its_expiry_the_criterion_blocks_again_with_a_note(project):
    project.contract("c", failing(expires="2000-01-01"))
    r = invoke("run", "-j", "1")
    assert r.exit_code == 1, r.output
    assert "NO-GO         AC-DEMO-001" in r.output and "WAIVED" not in r.output
    assert "waiver expired on 2000-01-01 (alice: value is 1 until the fix lands" in r.output
    assert "release verdict: NO-GO" in r.output
    assert "1 criterion: 0 GO, 1 NO-GO, 0 UNPROVEN" in r.output
    assert "waiver expired on 2000-01-01" in invoke("lint").output


def test_the_run_judges_by_the_date_it_is_given(project):
    project.contract("c", failing())
    expires = datetime.date.fromisoformat(EXPIRES)
    before = run_on(project, expires - datetime.timedelta(days=1), evidence_root=None)
    assert before.verdict is Verdict.GO and before.criteria[0].label == WAIVED
    assert int(run_exit_code(before)) == 0
    on = run_on(project, expires, evidence_root=None)
    assert on.verdict is Verdict.NO_GO and on.criteria[0].label == "NO-GO"
    assert on.criteria[0].waiver.status is WaiverStatus.EXPIRED
    assert int(run_exit_code(on)) == 1


def test_a_waiver_on_a_go_criterion_is_reported_unused(project):
    project.contract("c", waived(simple_contract()))
    r = invoke("run", "-j", "1", "--output", "github")
    assert r.exit_code == 0
    assert (
        "GO            AC-DEMO-001        demo criterion — waiver unused: the criterion is GO"
        in r.output
    )
    assert "1 criterion: 1 GO, 0 NO-GO, 0 UNPROVEN" in r.output
    assert (
        "::notice file=contracts/c.yaml,line=14,col=16,title=AC-DEMO-001 GO%3A waiver unused::"
        in r.output
    )


def test_a_signed_run_with_a_waived_criterion_verifies(project, tmp_path):
    priv, pub = generate_keypair(tmp_path / "k.key")
    project.contract("c", failing())
    project.contract("d", simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002"))
    day = datetime.date.fromisoformat(EXPIRES) - datetime.timedelta(days=1)
    result = run_on(project, day, evidence_root=tmp_path / "ev", signer=load_signer(priv))
    run_dir = Path(result.evidence_dir)
    assert verify_run(run_dir, [load_public_key(pub)]) == []
    signed = json.loads((run_dir / "verdict.json").read_text())
    assert signed["verdict"] == "GO"
    assert signed["criteria"]["AC-DEMO-001"]["verdict"] == "NO-GO"
    assert signed["criteria"]["AC-DEMO-001"]["waiver"] == "active"
    assert "waiver" not in signed["criteria"]["AC-DEMO-002"]
    local = json.loads((run_dir / "criteria" / "AC-DEMO-001" / "verdict.json").read_text())
    assert local["waiver"]["status"] == "active"
    assert "1 WAIVED" in signed["summary"]


def test_a_waived_blocker_is_never_promoted(project, tmp_path):
    """The release verdict is GO, and still: a waiver lets the gate pass, never a promotion."""
    from harness.replay import promotion_rules

    priv, pub = generate_keypair(tmp_path / "k.key")
    project.contract("c", failing())
    project.commit()
    day = datetime.date.fromisoformat(EXPIRES) - datetime.timedelta(days=1)
    result = run_on(project, day, evidence_root=tmp_path / "ev", signer=load_signer(priv))
    rules = {r.name: r for r in promotion_rules(Path(result.evidence_dir), [pub])}
    assert rules["verdict"].ok
    assert not rules["no waiver"].ok
    assert rules["no waiver"].detail == (
        "WAIVED (a waiver lets the gate pass, never a promotion): AC-DEMO-001"
    )
    required = promotion_rules(Path(result.evidence_dir), [pub], required=["AC-DEMO-001"])
    assert (
        "not GO: AC-DEMO-001" in next(r for r in required if r.name == "required criteria").detail
    )


# --------------------------------------------------------------------------- every report


@pytest.fixture
def waived_run(project, tmp_path):
    """One run, three criteria: a waived NO-GO, an expired waiver, a plain GO."""
    project.contract("a", failing())
    project.contract("b", failing(cid="AC-DEMO-002", expires="2026-01-01"))
    project.contract("c", simple_contract(cid="AC-DEMO-003", inv="INV-DEMO-003"))
    contracts = load_contract_set([project.root / "contracts"])
    day = datetime.date.fromisoformat(EXPIRES) - datetime.timedelta(days=30)
    result = run_on(project, day, evidence_root=tmp_path / "ev")
    assert [c.label for c in result.criteria] == [WAIVED, "NO-GO", "GO"]
    return result, contracts


def test_terminal_lines_show_waived_and_expired(waived_run):
    from harness.reporters.terminal import criterion_line

    result, _ = waived_run
    lines = [click.unstyle(criterion_line(c)) for c in result.criteria]
    assert lines[0].startswith("WAIVED        AC-DEMO-001")
    assert "— NO-GO: INV-DEMO-001 FAIL" in lines[0] and f"waived until {EXPIRES}" in lines[0]
    assert lines[1].startswith("NO-GO         AC-DEMO-002")
    assert "waiver expired on 2026-01-01" in lines[1]
    assert result.summary_line() == "3 criteria: 1 GO, 1 NO-GO, 0 UNPROVEN, 1 WAIVED"


def test_github_annotations_warn_on_waived_and_error_on_expired(waived_run):
    result, contracts = waived_run
    lines = annotation_lines(result, contracts)
    (waived,) = [x for x in lines if "AC-DEMO-001" in x]
    assert waived.startswith(
        "::warning file=contracts/a.yaml,line=16,col=5,title=AC-DEMO-001 WAIVED (NO-GO; "
        "reported only until its waiver expires)::INV-DEMO-001 FAIL"
    )
    assert f"waived until {EXPIRES} by alice" in waived
    (expired,) = [x for x in lines if "AC-DEMO-002" in x]
    assert expired.startswith(
        "::error file=contracts/b.yaml,line=16,col=5,title=AC-DEMO-002 NO-GO::"
    )
    assert "waiver expired on 2026-01-01" in expired


def test_junit_skips_the_waived_with_the_reason_and_fails_the_expired(waived_run, tmp_path):
    result, _ = waived_run
    out = tmp_path / "r.xml"
    out.write_bytes(junit_xml(result))
    suites = {s.name.split()[0]: s for s in JUnitXml.fromfile(str(out))}
    props = {p.name: p.value for p in suites["AC-DEMO-001"].properties()}
    assert props["verdict"] == WAIVED and props["own_verdict"] == "NO-GO"
    assert props["waiver"] == "active" and props["fails_run"] == "false"
    cases = {c.name: c for c in suites["AC-DEMO-001"]}
    (skip,) = cases["INV-DEMO-001"].result
    assert isinstance(skip, Skipped)
    assert skip.message.startswith(
        f"AC-DEMO-001 is WAIVED (NO-GO), reported only (waived until {EXPIRES} by alice"
    )
    assert skip.message.endswith(": FAIL: value: observed 1, expected >= 10 (out of bounds)")
    assert isinstance(cases["waiver"].result[0], Skipped)
    assert not any(isinstance(x, Failure) for c in suites["AC-DEMO-001"] for x in c.result)
    expired = {c.name: c for c in suites["AC-DEMO-002"]}
    assert isinstance(expired["INV-DEMO-002"].result[0], Failure)
    (note,) = expired["waiver"].result
    assert isinstance(note, Failure) and "waiver expired on 2026-01-01" in note.message
    props = {p.name: p.value for p in suites["AC-DEMO-002"].properties()}
    assert props["verdict"] == "NO-GO" and props["waiver"] == "expired"


def test_sarif_makes_the_waived_a_suppressed_note(waived_run):
    result, contracts = waived_run
    log = sarif_log(result, contracts)
    schema = json.loads((SCHEMAS / "sarif-2.1.0.json").read_text())
    assert sorted(Draft4Validator(schema).iter_errors(log), key=str) == []
    results = log["runs"][0]["results"]
    mine = [
        r for r in results if "AC-DEMO-001" in r["message"]["text"] or r["ruleId"] == "INV-DEMO-001"
    ]
    assert mine and {r["level"] for r in mine} == {"note"}
    for r in mine:
        (s,) = r["suppressions"]
        assert s["kind"] == "external" and s["status"] == "accepted"
        assert s["justification"].startswith(f"waived until {EXPIRES} by alice")
    crit = next(r for r in mine if r["ruleId"] == "AC-DEMO-001")
    assert crit["message"]["text"].startswith("AC-DEMO-001 WAIVED (NO-GO): INV-DEMO-001 FAIL")
    expired = [r for r in results if r["ruleId"] in ("AC-DEMO-002", "INV-DEMO-002")]
    assert {r["level"] for r in expired} == {"error"}
    assert not any("suppressions" in r for r in expired)


def test_markdown_shows_waived_with_its_own_verdict(waived_run):
    result, _ = waived_run
    md = markdown_summary(result)
    assert "**3 criteria: 1 GO, 1 NO-GO, 0 UNPROVEN, 1 WAIVED**" in md
    row = next(x for x in md.splitlines() if "AC-DEMO-001" in x)
    assert row.startswith("| 🔕 WAIVED (NO-GO) | AC-DEMO-001 |")
    assert f"waived until {EXPIRES} by alice" in row
    expired = next(x for x in md.splitlines() if "AC-DEMO-002" in x)
    assert expired.startswith("| ❌ NO-GO | AC-DEMO-002 |") and "waiver expired on" in expired


def test_html_shows_waived_with_its_own_verdict_and_the_waiver(waived_run):
    result, _ = waived_run
    page = render_html(result, Path(result.evidence_dir))
    assert ">WAIVED<" in page and "own verdict" in page
    assert f"WAIVED until {EXPIRES}: does not block until then" in page
    assert f'<a href="{LINK}" rel="noopener noreferrer">' in page
    assert "waiver expired on 2026-01-01: the criterion blocks again" in page
    assert "3 criteria: 1 GO, 1 NO-GO, 0 UNPROVEN, 1 WAIVED" in page
    assert 'id="waived">1 criterion WAIVED' in page


def test_pytest_items_xfail_a_waived_criterion(project):
    project.contract("a", failing(expires=SOON))
    project.contract("b", failing(cid="AC-DEMO-002", expires="2000-01-01"))
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "contracts/", "-q", "-rx"]
    out = subprocess.run(base, cwd=project.root, env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed, 1 xfailed" in out.stdout
    assert (
        f"XFAIL contracts/a.yaml::AC-DEMO-001 - WAIVED (NO-GO), waived until {SOON} by alice"
        in out.stdout
    )
    assert "waiver expired on 2000-01-01" in out.stdout


def test_the_contracts_validate_check_judges_waivers_by_the_projects_max_waiver_days(
    project, tmp_path
):
    # harness.checks.contracts:contracts_validate (the shipped meta contract's check)
    # lints as `harness lint` does: the project's max-waiver-days, not the default
    from harness.checks.contracts import contracts_validate
    from harness.context import CheckContext

    far = (today_utc() + datetime.timedelta(days=200)).isoformat()
    project.contract("c", failing(expires=far))

    def validate() -> dict:
        (tmp_path / "s").mkdir(exist_ok=True)
        ctx = CheckContext({}, 1, tmp_path / "s", tmp_path, "INV-X", root=project.root)
        return contracts_validate(ctx)

    refused = validate()
    assert refused["errors"] == 1 and "a waiver may run at most 90 days" in refused["first_error"]
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "max-waiver-days = 365\n")
    assert validate()["errors"] == 0
    assert invoke("lint").exit_code == 0


def test_results_encode_as_dataclasses_asdict_did(project, tmp_path):
    """``RunResult.to_dict`` walks the dataclasses in one pass; it gives what
    ``dataclasses.asdict`` followed by the enum/tuple encoding gave."""
    import dataclasses

    project.contract("c", failing(expires=SOON))
    project.contract("d", simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002"))
    out = tmp_path / "r.json"
    assert invoke("run", "-j", "1", "--output", f"json={out}").exit_code == 0
    result = RunResult.from_dict(json.loads(out.read_text()))
    want = _old_encode(dataclasses.asdict(result))
    for c in want["criteria"]:
        if c.get("waiver") is None:
            c.pop("waiver", None)
    assert result.to_dict() == want
    assert json.dumps(result.to_dict(), sort_keys=True) == json.dumps(want, sort_keys=True)


def test_encode_walks_dataclasses_like_asdict_and_leaves_no_enum_or_tuple():
    import dataclasses
    import enum
    from collections import namedtuple

    from harness.model import Verdict, _encode

    class Plain(enum.Enum):
        A = (1, 2)

    Pair = namedtuple("Pair", "x y")

    @dataclasses.dataclass
    class Inner:
        verdict: Verdict
        kinds: tuple
        note: str | None = None

    @dataclasses.dataclass
    class Outer:
        inner: Inner
        items: list
        table: dict
        pair: Pair
        plain: Plain

    value = Outer(
        Inner(Verdict.GO, (1, (2.5, "x"), None)),
        [Inner(Verdict.NO_GO, ())],
        {"k": (Verdict.UNPROVEN, float("nan"))},
        Pair(1, (2,)),
        Plain.A,
    )
    got = _encode(value)
    assert type(got["inner"]["verdict"]) is str and got["inner"]["verdict"] == "GO"
    assert got["inner"]["kinds"] == [1, [2.5, "x"], None]
    assert got["items"] == [{"verdict": "NO-GO", "kinds": [], "note": None}]
    assert type(got["table"]["k"][0]) is str and got["pair"] == [1, [2]]
    assert got["plain"] == (1, 2)  # an enum's value as it is, as before
    assert json.dumps(got, sort_keys=True) == json.dumps(
        _old_encode(dataclasses.asdict(value)), sort_keys=True
    )


def _old_encode(obj):
    """What RunResult.to_dict applied to dataclasses.asdict before the one-pass walk."""
    import enum

    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _old_encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_old_encode(v) for v in obj]
    return obj
