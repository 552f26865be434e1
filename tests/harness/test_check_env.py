"""``[tool.harness] check-env``: variables set for every check, ``{scratch}`` being the
check's own scratch folder, so the system under test writes its side effects there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.config import load_config
from harness.errors import UsageError
from harness.loader import load_contract_set
from harness.model import InvariantOutcome
from harness.runner import run_contracts

from .conftest import PYPROJECT, simple_contract

ENV_CHECKS = '''
import os
from pathlib import Path


def writes_audit_log(ctx):
    """What a system under test does: append to the log its variable names."""
    log = Path(os.environ["DEMO_AUDIT_LOG"])
    with open(log, "a") as fh:
        fh.write('{"event": "trained"}\\n')
    ctx.attach(log, "demo-audit.jsonl")
    return {
        "in_scratch": log.parent == ctx.scratch,
        "scratch_named": os.environ.get("HARNESS_SCRATCH") == str(ctx.scratch),
        "plain": os.environ.get("DEMO_PLAIN", ""),
    }


def reads_env(ctx):
    value = os.environ.get(ctx.params["name"], "")
    if ctx.params.get("leak"):  # what a system under test may do to its environment
        os.environ["DEMO_LEAKED"] = "1"
        os.environ.pop("DEMO_PASSED", None)
    return {"value": value, "scratch": str(ctx.scratch)}
'''


@pytest.fixture
def envproject(project):
    (project.root / "envchecks.py").write_text(ENV_CHECKS)
    return project


def configure(project, line: str) -> None:
    (project.root / "pyproject.toml").write_text(PYPROJECT + line + "\n")


def test_a_check_writing_where_check_env_points_writes_into_its_scratch(envproject):
    configure(
        envproject,
        'check-env = { DEMO_AUDIT_LOG = "{scratch}/demo-audit.jsonl", DEMO_PLAIN = "plain" }',
    )
    envproject.contract(
        "a",
        simple_contract(
            check="envchecks:writes_audit_log",
            expect="in_scratch: {eq: true}\n      scratch_named: {eq: true}\n"
            "      plain: {eq: plain}",
            falsifiers="",
        ),
    )
    r = CliRunner().invoke(cli, ["run", "-j", "1", "--seed", "1", "-v"])
    assert "INV-DEMO-001" in r.output and "FAIL" not in r.output and "ERROR" not in r.output, (
        r.output
    )
    results = json.loads(next((envproject.root / "evidence").glob("2*/results.json")).read_text())
    inv = results["criteria"][0]["invariants"][0]
    assert inv["outcome"] == "PASS", inv
    assert inv["observations"] == {"in_scratch": True, "scratch_named": True, "plain": "plain"}
    # the log reached the evidence only as the artifact the coordinator copied
    logs = list(envproject.root.rglob("demo-audit.jsonl"))
    assert [p.parent.name for p in logs] == ["INV-DEMO-001"], logs
    assert logs[0].read_text() == '{"event": "trained"}\n'


def test_pass_env_values_win_over_check_env(envproject, monkeypatch, tmp_path):
    body = simple_contract(
        check="envchecks:reads_env",
        expect='value: {ne: ""}',
        params="{name: DEMO_AUDIT_LOG}",
        falsifiers="",
    )
    envproject.contract("a", body)
    contracts = load_contract_set([envproject.root / "contracts"])

    def observed(contracts):
        result = run_contracts(
            contracts,
            contracts.criteria,
            jobs=1,
            seed=1,
            root=envproject.root,
            check_env={"DEMO_AUDIT_LOG": "{scratch}/audit.jsonl"},
        )
        inv = result.criteria[0].invariants[0]
        assert inv.outcome is InvariantOutcome.PASS, inv
        return inv.observations

    seen = observed(contracts)
    assert seen["value"] == f"{seen['scratch']}/audit.jsonl"
    assert Path(seen["scratch"]).name == "scratch"
    # the coordinator's own value, passed by the invariant's pass-env, is set after
    monkeypatch.setenv("DEMO_AUDIT_LOG", str(tmp_path / "elsewhere.jsonl"))
    envproject.contract(
        "a", body.replace("    expect:", "    pass-env: [DEMO_AUDIT_LOG]\n    expect:")
    )
    seen = observed(load_contract_set([envproject.root / "contracts"]))
    assert seen["value"] == str(tmp_path / "elsewhere.jsonl")


def test_check_env_is_parsed_from_pyproject(project):
    assert load_config().check_env == {}
    configure(project, 'check-env = { A_LOG = "{scratch}/a.jsonl", B = "" }')
    assert load_config().check_env == {"A_LOG": "{scratch}/a.jsonl", "B": ""}


@pytest.mark.parametrize(
    "line, why",
    [
        ('check-env = ["A_LOG"]', "must map variable names to strings"),
        ('check-env = "A_LOG={scratch}"', "must map variable names to strings"),
        ("check-env = { A_LOG = 1 }", "must map variable names to strings"),
        ("check-env = { A_LOG = { nested = 'x' } }", "must map variable names to strings"),
        ("check-env = { 'A=B' = 'x' }", "'A=B' is not a variable name"),
        ("check-env = { '' = 'x' }", "'' is not a variable name"),
        ("check-env = { HARNESS_SCRATCH = '/tmp' }", "HARNESS_SCRATCH is set by the harness"),
    ],
)
def test_a_malformed_check_env_is_a_one_line_usage_error(project, line, why):
    configure(project, line)
    with pytest.raises(UsageError, match=why) as exc:
        load_config()
    message = str(exc.value)
    assert "pyproject.toml" in message and "[tool.harness] check-env" in message
    assert "\n" not in message
    project.contract("a", simple_contract())
    r = CliRunner().invoke(cli, ["run", "-j", "1"])
    assert r.exit_code == 4 and why in r.output, r.output


def test_this_repository_points_the_cores_audit_log_into_each_checks_scratch():
    root = Path(__file__).resolve().parents[2]
    assert load_config(root).check_env["KERNELS_AUDIT_LOG"] == "{scratch}/lifecycle-audit.jsonl"


def test_the_inline_executor_sets_a_tasks_env_for_the_task_and_restores_it(envproject, monkeypatch):
    """Library API: InlineExecutor applies check-env, pass-env and HARNESS_SCRATCH as a
    forked worker does, for the task only; the coordinator's environment comes back,
    also when a check changed it."""
    import os

    from harness.executor import InlineExecutor

    monkeypatch.setenv("DEMO_PASSED", "from the coordinator")
    monkeypatch.setenv("DEMO_AUDIT_LOG", "the coordinator's own")
    monkeypatch.delenv("HARNESS_SCRATCH", raising=False)
    before = dict(os.environ)
    envproject.contract(
        "a",
        simple_contract(
            check="envchecks:reads_env",
            expect='value: {ne: ""}',
            params="{name: DEMO_AUDIT_LOG}",
            falsifiers="",
        ),
    )
    envproject.contract(
        "b",
        simple_contract(
            check="envchecks:reads_env",
            expect="value: {eq: from the coordinator}",
            params="{name: DEMO_PASSED, leak: true}",
            falsifiers="",
            cid="AC-TWO-001",
            inv="INV-TWO-001",
        )
        .replace("    expect:", "    pass-env: [DEMO_PASSED]\n    expect:")
        .replace("name: ac-two-001", "name: two"),
    )
    contracts = load_contract_set([envproject.root / "contracts"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=1,
        seed=1,
        root=envproject.root,
        executor=InlineExecutor(),
        check_env={"DEMO_AUDIT_LOG": "{scratch}/audit.jsonl", "DEMO_ONLY_CHECKS": "x"},
    )
    by_id = {c.criterion_id: c.invariants[0] for c in result.criteria}
    first, second = by_id["AC-DEMO-001"], by_id["AC-TWO-001"]
    assert first.outcome is InvariantOutcome.PASS and second.outcome is InvariantOutcome.PASS
    assert first.observations["value"] == f"{first.observations['scratch']}/audit.jsonl"
    assert second.observations["value"] == "from the coordinator"
    assert dict(os.environ) == before  # nothing the tasks set outlives them
