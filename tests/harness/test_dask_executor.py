"""The Dask executor on LocalClusters started and stopped here: a run is GO as
locally, a killed worker is one recorded retry then ERROR, Ctrl-C exits 2 with an
incomplete bundle, logs and artifacts come back as bytes, a worker running other
code is refused, and the same seed gives the same results.json as the local pool."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.dask_executor import DaskExecutor
from harness.dask_worker import (
    WorkerSpec,
    digest_of,
    project_report,
    report_difference,
    run_on_worker,
)
from harness.errors import UsageError
from harness.loader import load_contract_set
from harness.model import InvariantOutcome, Verdict
from harness.plan import Limits, Profile, make_plan
from harness.runner import run_contracts

from .conftest import simple_contract

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

REPO = Path(__file__).resolve().parents[2]

# a check that kills the Dask worker process running it: its parent is the fork
# server, whose parent is the Dask worker
KILLERS = """

def _dask_worker_pid():
    with open(f"/proc/{os.getppid()}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def kills_its_worker(ctx):
    os.kill(_dask_worker_pid(), signal.SIGKILL)
    time.sleep(30)
    return {"value": 1}


def kills_its_worker_once(ctx):
    marker = ctx.params["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(_dask_worker_pid(), signal.SIGKILL)
        time.sleep(30)
    return {"value": 1}


def where_am_i(ctx):
    print("x" * 3000)
    ctx.attach(b"artifact bytes", "thing.bin")
    (ctx.scratch / "folder").mkdir()
    (ctx.scratch / "folder" / "inner.txt").write_text("inner")
    ctx.attach(ctx.scratch / "folder", "folder")
    return {"value": 1, "scratch": str(ctx.scratch), "cwd": os.getcwd()}


def sleeps_with_marker(ctx):
    with open(ctx.params["marker"], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)
    return {"value": 1}
"""


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster started here, reached as an external scheduler (--scheduler)."""
    with dask.config.set(
        {
            "distributed.scheduler.allowed-failures": 0,
            "distributed.scheduler.worker-saturation": 1.0,
        }
    ):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
        )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture
def demo(project):
    with open(project.root / "demochecks.py", "a") as fh:
        fh.write(KILLERS)
    return project


def run_dask(project, **kw):
    contracts = load_contract_set([project.root / "contracts"])
    options = {"jobs": 2, "seed": 7, "root": project.root, "default_timeout": 30}
    options.update(kw)
    return run_contracts(contracts, contracts.criteria, executor_name="dask", **options)


def by_id(result):
    return {c.criterion_id: c for c in result.criteria}


def test_a_run_through_dask_is_go_like_local_with_logs_and_artifacts_as_bytes(demo, scheduler):
    demo.contract("c", simple_contract())
    demo.contract(
        "w",
        simple_contract(check="demochecks:where_am_i", cid="AC-WHERE-001", inv="INV-WHERE-001"),
    )
    evidence = demo.root / "evidence"
    result = run_dask(demo, scheduler=scheduler, evidence_root=evidence, limits=Limits(output=1000))
    assert result.verdict is Verdict.GO, [c.reasons for c in result.criteria]
    where = by_id(result)["AC-WHERE-001"].invariants[0]
    # the check ran in the worker's own temporary folder, not the coordinator's check dir
    assert "harness-dask-task-" in where.observations["scratch"]
    assert where.observations["harness.output"] == {"stdout": "truncated: kept 1000 of 3001 bytes"}
    run_dir = Path(result.evidence_dir)
    crit = run_dir / "criteria" / "AC-WHERE-001"
    assert (crit / "artifacts" / "INV-WHERE-001" / "thing.bin").read_bytes() == b"artifact bytes"
    assert (crit / "artifacts" / "INV-WHERE-001" / "folder" / "inner.txt").read_text() == "inner"
    log = (crit / "logs" / "INV-WHERE-001.stdout.txt").read_text()
    assert log.startswith("x" * 1000) and "kept 1000 of 3001 bytes" in log
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["executor"]["name"] == "dask" and meta["executor"]["scheduler"] == scheduler
    assert len(meta["executor"]["workers"]) == 2
    sources = json.loads((run_dir / "sources.json").read_text())
    assert "demochecks.py" in sources["files"]  # named by the worker, digested here
    # each check's CPU, as the worker's fork server reaped it, comes back with its record
    ran = {r.invariant_id for c in result.criteria for r in c.invariants}
    ran |= {f.falsifier_id for c in result.criteria for f in c.falsifiers}
    assert set(result.check_cpu) == ran and all(v >= 0 for v in result.check_cpu.values())


def test_a_check_sending_back_more_than_the_cap_is_a_failed_record_naming_it(demo, scheduler):
    demo.contract(
        "w",
        simple_contract(check="demochecks:where_am_i", cid="AC-WHERE-001", inv="INV-WHERE-001"),
    )
    executor = DaskExecutor(2, root=demo.root, scheduler=scheduler, max_transfer=2000)
    result = run_dask(demo, executor=executor)
    where = result.criteria[0].invariants[0]
    assert where.outcome is InvariantOutcome.ERROR
    assert "more than the 2000 bytes a Dask worker sends back for one check" in where.message


def test_a_killed_worker_is_retried_once_recorded_then_error_and_the_run_goes_on(demo, tmp_path):
    demo.contract(
        "a",
        simple_contract(check="demochecks:kills_its_worker", cid="AC-KILL-001", inv="INV-KILL-001"),
    )
    demo.contract(
        "b",
        simple_contract(
            check="demochecks:kills_its_worker_once",
            cid="AC-ONCE-001",
            inv="INV-ONCE-001",
            params=f"{{marker: {tmp_path / 'killed-once'}}}",
            falsifiers="",
        ),
    )
    demo.contract("c", simple_contract())
    # no scheduler: the executor starts a LocalCluster of 2 workers and closes it
    result = run_dask(demo, evidence_root=demo.root / "evidence")
    crits = by_id(result)
    killed = crits["AC-KILL-001"].invariants[0]
    assert killed.outcome is InvariantOutcome.ERROR
    assert "lost twice" in killed.message and "retried once" in killed.message
    assert "KilledWorker" in killed.message
    once = crits["AC-ONCE-001"].invariants[0]
    assert once.outcome is InvariantOutcome.PASS
    assert "retried once" in once.observations["harness.retry"]
    assert crits["AC-DEMO-001"].verdict is Verdict.GO  # the run went on
    audit = (Path(result.evidence_dir) / "audit.jsonl").read_text().splitlines()
    starts = [json.loads(line) for line in audit if '"check_start"' in line]
    assert sum(1 for e in starts if "INV-ONCE-001" in json.dumps(e)) == 2  # the retry


def test_ctrl_c_cancels_every_check_and_exits_2_with_an_incomplete_bundle(demo, tmp_path):
    marker = tmp_path / "started"
    demo.contract(
        "c",
        simple_contract(
            check="demochecks:sleeps_with_marker", params=f"{{marker: {marker}}}", timeout=60
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--executor", "dask", "-j", "1"],
        cwd=demo.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(demo.root)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (marker.exists() and marker.read_text()):
        time.sleep(0.1)
    assert marker.exists(), "the check never started"
    pid = int(marker.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    assert "interrupted" in err
    run_dir = next(p for p in (demo.root / "evidence").iterdir() if p.name[0].isdigit())
    assert (run_dir / "INCOMPLETE").exists()
    assert json.loads((run_dir / "run.json").read_text())["complete"] is False
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the check outlived the run"


def test_a_worker_running_a_changed_module_is_refused_naming_it(demo, tmp_path):
    demo.contract("c", simple_contract())
    copy = tmp_path / "elsewhere"
    shutil.copytree(demo.root, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "demochecks.py", "a") as fh:
        fh.write("\n# a change the coordinator's checkout does not have\n")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
            env={"HARNESS_PROJECT_ROOT": str(copy)},  # the worker's checkout
        )
    try:
        evidence = demo.root / "evidence"
        with pytest.raises(UsageError) as info:
            run_dask(demo, scheduler=cluster.scheduler_address, evidence_root=evidence)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(
            f"Dask worker {next(iter(cluster.workers.values())).worker_address}"
        )
        assert "source digest differs" in message and "changed there: demochecks.py" in message
        assert not list(evidence.glob("*/run.json"))  # refused before any bundle
        # a scheduler that retries on its own is refused too: the retry must be ours
        client = distributed.Client(cluster.scheduler_address, set_as_default=False)
        try:
            client.run_on_scheduler(_set_allowed_failures, 3)
            with pytest.raises(UsageError, match="allowed-failures"):
                run_dask(demo, scheduler=cluster.scheduler_address)
        finally:
            client.close()
    finally:
        cluster.close()


def _set_allowed_failures(n, dask_scheduler=None):
    dask_scheduler.allowed_failures = n


def test_a_task_on_a_worker_that_differs_is_a_failed_record(demo, tmp_path):
    """A worker that joins after the start is held to the digests task by task."""
    demo.contract("c", simple_contract())
    contracts = load_contract_set([demo.root / "contracts"])
    plan = make_plan(
        contracts, contracts.criteria, seed=1, profile=Profile.FULL,
        checks_dir=tmp_path / "checks", root=demo.root, default_timeout=30,
    )  # fmt: skip
    mine = project_report(demo.root, ())
    spec = WorkerSpec("t1", str(demo.root), (), "0" * 64, digest_of(mine["dependencies"]))
    reply = run_on_worker(plan.tasks[0], spec)
    record = json.loads(reply["record"])
    assert record["status"] == "failed" and "source digest differs" in record["message"]


def test_a_dependency_difference_names_the_distribution():
    mine = {"sources": {"a.py": "1"}, "dependencies": {"numpy": "2.1.0", "python": "3.11.7"}}
    theirs = {**mine, "dependencies": {"numpy": "2.0.2", "python": "3.11.7"}, "host": "n1"}
    assert "numpy 2.0.2 there, 2.1.0 here" in report_difference(mine, theirs)
    assert report_difference(mine, {**mine, "host": "n1"}) == ""


def test_executor_dask_without_distributed_is_a_one_line_usage_error(project, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "distributed" else real(name, *a),
    )
    project.contract("c", simple_contract())
    result = CliRunner().invoke(cli, ["run", "--executor", "dask"])
    assert result.exit_code == 4
    assert "ml-contract-harness[dask]" in result.output
    with pytest.raises(UsageError, match=r"\[dask\]"):
        DaskExecutor(1, root=project.root)


def test_executor_and_scheduler_come_from_the_options_or_tool_harness(project):
    from harness.config import load_config

    project.contract("c", simple_contract())
    with open(project.root / "pyproject.toml", "a") as fh:
        fh.write('executor = "dask"\nscheduler = "tcp://127.0.0.1:1"\n')
    cfg = load_config(project.root)
    assert (cfg.executor, cfg.scheduler) == ("dask", "tcp://127.0.0.1:1")
    result = CliRunner().invoke(cli, ["run", "--executor", "local", "--scheduler", "tcp://x:1"])
    assert result.exit_code == 4 and "--scheduler runs on Dask" in result.output
    # an unreachable scheduler: one line, exit 4, no bundle
    unreachable = DaskExecutor(1, root=project.root, scheduler=cfg.scheduler, connect_timeout=1)
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        run_dask(project, executor=unreachable, evidence_root=project.root / "evidence")
    assert not list((project.root / "evidence").glob("*/run.json"))
    text = (project.root / "pyproject.toml").read_text().replace('"dask"', '"slurm"')
    (project.root / "pyproject.toml").write_text(text)
    with pytest.raises(UsageError, match="executor must be one of local, dask"):
        load_config(project.root)


VOLATILE = {"duration", "started", "finished", "run_id", "evidence_dir", "t", "check_cpu"}


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_the_same_seed_gives_the_same_results_on_the_local_pool_and_on_dask(
    tmp_path, monkeypatch, scheduler
):
    monkeypatch.chdir(REPO)
    runs = {}
    for name, extra in (("local", []), ("dask", ["--scheduler", scheduler])):
        evidence = tmp_path / name
        args = ["run", "--criterion", "AC-META-001", "--criterion", "AC-META-002"]
        args += ["--seed", "11", "-j", "2", "--evidence-dir", str(evidence), *extra]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        (run_dir,) = [p for p in evidence.iterdir() if p.name[0].isdigit()]
        runs[name] = json.loads((run_dir / "results.json").read_text())
    assert _stable(runs["local"]) == _stable(runs["dask"])
    n = sum(len(c["invariants"]) + len(c["falsifiers"]) for c in runs["dask"]["criteria"])
    assert n >= 8


def test_the_coordinator_takes_only_validated_bytes_from_the_bridge(project, tmp_path):
    """What the bridge sends is untrusted like a worker's record: an undeclared or
    escaping artifact, a malformed record or a log that lies about its size is a
    failed record, and nothing is written outside the task's check folder."""
    project.contract("c", simple_contract())
    contracts = load_contract_set([project.root / "contracts"])
    plan = make_plan(
        contracts, contracts.criteria, seed=1, profile=Profile.FULL,
        checks_dir=tmp_path / "checks", root=project.root, default_timeout=30,
    )  # fmt: skip
    executor = DaskExecutor(1, root=project.root)
    record = b'{"status": "returned", "observations": {"value": 1}, "artifacts": ["a.bin"]}'
    cases = {
        "undeclared": ({"record": 0, "artifacts": [["b.bin", 1]]}, [record, b"x"]),
        "escaping": ({"record": 0, "artifacts": [["a.bin/../../../x", 1]]}, [record, b"x"]),
        "malformed": ({"record": 0}, [b"{not json"]),
        "lying log": ({"record": 0, "logs": {"stdout": [1, 1]}}, [record, b"12345"]),
        "no blob": ({"record": 7}, [record]),
    }
    for name, (header, blobs) in cases.items():
        task = dataclasses.replace(plan.tasks[0], check_dir=str(tmp_path / name))
        observed = executor._write_reply(task, header, blobs)
        assert observed.status == "failed", name
    assert not (tmp_path / "x").exists()
    ok = executor._write_reply(
        plan.tasks[0], {"record": 0, "artifacts": [["a.bin", 1]], "logs": {"stderr": [2, 9]}},
        [record, b"bytes", b"abc"],
    )  # fmt: skip
    assert ok.status == "returned"
    check_dir = Path(plan.tasks[0].check_dir)
    assert (check_dir / "artifacts" / "a.bin").read_bytes() == b"bytes"
    assert (check_dir / "stderr.txt").stat().st_size == 9  # its true size, for the note
    # a CPU figure that is not a number of seconds is not recorded
    for i, bad in enumerate(["12", True, -1.0, float("nan"), 1e300, [1]]):
        key = f"INV-BAD-{i}"
        executor._done(dataclasses.replace(plan.tasks[0], key=key), {"record": 0, "cpu": bad},
                       [record])  # fmt: skip
    executor._done(plan.tasks[0], {"record": 0, "cpu": 2.5}, [record])
    assert executor.cpu_seconds() == {plan.tasks[0].key: 2.5}


def test_the_coordinator_never_imports_distributed():
    """The Dask client, and every pickle it unpickles, lives in the bridge process."""
    code = "import sys, harness.runner, harness.dask_executor; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rerun_runs_on_dask_when_asked(demo, scheduler):
    from click.testing import CliRunner

    from harness.cli import cli

    demo.contract("c", simple_contract())
    result = run_contracts(
        *(lambda cs: (cs, cs.criteria))(load_contract_set([demo.root / "contracts"])),
        jobs=1, seed=7, root=demo.root, evidence_root=demo.root / "evidence",
    )  # fmt: skip
    assert result.verdict is Verdict.GO
    r = CliRunner().invoke(
        cli, ["rerun", result.evidence_dir, "--here", "--unverified", "--scheduler", scheduler]
    )
    assert r.exit_code == 0, r.output
    assert "rerun matches" in r.output
    newest = sorted((demo.root / "evidence").glob("2*"))[-1]
    meta = json.loads((newest / "run.json").read_text())
    assert meta["executor"]["name"] == "dask" and meta["executor"]["scheduler"] == scheduler
