"""Reports people read: HTML (in a real headless Chromium), SARIF against its
published schema, JUnit through a real consumer, diff and history."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli

from .conftest import simple_contract

SCHEMAS = Path(__file__).parents[2] / "harness" / "schema"
XSS = "<script>alert(1)</script>"


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _runs(project):
    return sorted(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())


@pytest.fixture
def hostile_run(project, tmp_path):
    body = simple_contract(title=XSS, expect="value: {ge: 10}").replace(
        "title: an invariant", 'title: "<img src=x onerror=alert(2)>"'
    )
    project.contract("c", body)
    r = invoke(
        "run",
        "-j",
        "1",
        "--output",
        f"html={tmp_path / 'r.html'}",
        "--output",
        f"sarif={tmp_path / 'r.sarif'}",
        "--output",
        f"junit={tmp_path / 'r.xml'}",
    )
    assert r.exit_code == 1
    return tmp_path


def test_html_escapes_contract_and_observation_strings(hostile_run):
    page = (hostile_run / "r.html").read_text()
    assert XSS not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'id="release-verdict"' in page and ">NO-GO<" in page
    assert (
        "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    ), "the report must not load anything from the network"


def test_report_command_renders_from_the_evidence(project, tmp_path):
    project.contract("c", simple_contract(check="demochecks:noisy"))
    assert invoke("run", "-j", "1").exit_code == 0
    run_dir = _runs(project)[-1]
    out = tmp_path / "report.html"
    r = invoke("report", str(run_dir), "--html", str(out), "--markdown", str(tmp_path / "s.md"))
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "evidence files" in page and "manifest.json" not in page.split("evidence files")[0]
    assert "<svg" in page  # the noisy check records a loss metric with a step
    assert "unsigned run" in page
    assert "✅ GO" in (tmp_path / "s.md").read_text()


def test_report_slowest_says_where_a_runs_time_went(project):
    # a slow check, a fast one and a mutant the fast profile does not run
    (project.root / "timed.py").write_text(
        "import time\n\ndef slow(ctx):\n    time.sleep(0.6)\n    return {'value': 1}\n"
    )
    project.contract("c", simple_contract(check="timed:slow"))
    project.contract("d", simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002", falsifiers=""))
    invoke("run", "-j", "1", "--fast")
    r = invoke("report", "latest", "--slowest", "1")
    assert r.exit_code == 0, r.output
    head, cpu, title, first, *rest = r.output.splitlines()
    assert "(fast profile)" in head and "on 1 workers" in head
    assert "2 of 3 checks ran" in head and "(1 not run)" in head
    # the fork server's count of each check's CPU: sleeping 0.6 s costs next to none
    assert cpu.startswith("CPU ") and "in 2 of 2 checks" in cpu and "cores" in cpu
    assert title.startswith("the 1 slowest")
    assert "INV-DEMO-001" in first and "PASS" in first and "AC-DEMO-001" in first
    wall, _, used, *_ = first.split()
    assert float(wall) >= 0.6 and float(used) < 0.5 and rest == []
    r = invoke("report", "latest")
    assert r.exit_code != 0 and "--slowest N" in r.output


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (.ci/run installs Debian's chromium)"
)
def test_html_in_headless_chromium_shows_the_verdict(hostile_run, tmp_path):
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (hostile_run / "r.html").as_uri()
    shot = tmp_path / "report.png"
    subprocess.run(
        [_chromium(), *flags, "--window-size=1200,1400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'id="release-verdict"' in dom and ">NO-GO</div>" in dom
    assert "1 criterion: 0 GO, 1 NO-GO, 0 UNPROVEN" in dom
    assert "<script>alert" not in dom  # rendered as text, never as a script element


def test_sarif_validates_against_the_published_schema(hostile_run, project):
    from jsonschema import Draft4Validator

    schema = json.loads((SCHEMAS / "sarif-2.1.0.json").read_text())
    log = json.loads((hostile_run / "r.sarif").read_text())
    errors = sorted(Draft4Validator(schema).iter_errors(log), key=str)
    assert errors == [], errors[:3]
    results = log["runs"][0]["results"]
    inv = next(r for r in results if r["ruleId"] == "INV-DEMO-001")
    region = inv["locations"][0]["physicalLocation"]["region"]
    assert inv["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "contracts/c.yaml"
    assert region["startLine"] == 11  # the invariant's line in the contract


def test_junit_parses_with_a_real_consumer(hostile_run):
    from junitparser import Failure, JUnitXml

    xml = JUnitXml.fromfile(str(hostile_run / "r.xml"))
    cases = [case for suite in xml for case in suite]
    assert {c.name for c in cases} >= {"INV-DEMO-001"}
    failed = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
    assert failed and "observed 1" in failed[0].result[0].message


def test_diff_reports_a_flip_and_exits_1_on_regression(project):
    project.contract("c", simple_contract())
    assert invoke("run", "-j", "1", "--seed", "1").exit_code == 0
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    assert invoke("run", "-j", "1", "--seed", "1").exit_code == 1
    a, b = _runs(project)
    r = invoke("diff", str(a), str(b))
    assert r.exit_code == 1
    assert "AC-DEMO-001: GO -> NO-GO (REGRESSED)" in r.output
    r = invoke("diff", str(b), str(a))
    assert r.exit_code == 0 and "(improved)" in r.output


def test_history_newest_first_and_rebuilt_when_the_index_is_missing(project):
    project.contract("c", simple_contract(expect="value: {ge: 10}"))
    invoke("run", "-j", "1")
    project.contract("c", simple_contract())
    invoke("run", "-j", "1")
    r = invoke("history", "AC-DEMO-001")
    lines = [x for x in r.output.splitlines() if x.startswith("20")]
    assert len(lines) == 2 and " GO " in lines[0] and "NO-GO" in lines[1]
    assert "last went NO-GO" in r.output
    (project.root / "evidence" / ".index.sqlite").unlink()
    data = json.loads(invoke("history", "AC-DEMO-001", "--json").output)
    assert [d["verdict"] for d in data] == ["GO", "NO-GO"]


def test_html_links_the_evidence_relative_to_the_report_and_survives_a_move(project, tmp_path):
    """Issue 15, item 12: no file:/// path of the machine that wrote it; moved with its
    bundle (an uploaded artifact), every link still resolves."""
    project.contract("c", simple_contract(check="demochecks:noisy"))
    out_dir = project.root / "evidence"
    assert invoke("run", "-j", "1", "--output", f"html={out_dir / 'report.html'}").exit_code == 0
    page = (out_dir / "report.html").read_text()
    assert "file://" not in page
    hrefs = [h for h in page.split('href="')[1:] if not h.startswith("#")]
    links = [h.split('"', 1)[0] for h in hrefs]
    assert links and all((out_dir / x).is_file() for x in links), links[:3]
    moved = tmp_path / "uploaded"
    shutil.copytree(out_dir, moved)
    assert all((moved / x).is_file() for x in links)


def test_html_charts_label_their_axes_and_keep_title_and_legend_apart():
    from harness.reporters.html import histogram, line_chart

    hist = histogram("drift: a long histogram title " * 3, [1, 2, 3], [2, 2, 2])
    title_y = hist.split('font-weight="600">')[0].rsplit('y="', 1)[1].split('"')[0]
    legend_y = hist.split('class="legend"')[1].split('y="', 1)[1].split('"')[0]
    assert title_y != legend_y and "■ reference" in hist and "■ current" in hist
    assert ">count</text>" in hist and "bin (1 … 3)" in hist
    line = line_chart("loss per step", [(1, 3.0), (2, 2.0)], y_label="loss")
    assert ">step</text>" in line and ">loss</text>" in line


def test_html_says_warn_criteria_do_not_block_next_to_a_go(project):
    warn = simple_contract(check="demochecks:ok", expect="value: {eq: 2}").replace(
        "severity: blocker", "severity: warn"
    )
    project.contract("w", warn)
    project.contract("b", simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002"))
    r = invoke("run", "-j", "1", "--output", "html=r.html")
    assert r.exit_code == 0, r.output
    page = (project.root / "r.html").read_text()
    assert ">GO</div>" in page
    assert "1 warn criteria are not GO (AC-DEMO-001)" in page
    assert "never block the release verdict" in page
