"""End to end through the runner and the worker pool: crashes, timeouts,
falsifiers of every kind winning and losing, isolation of mutants."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from harness.executor import LocalProcessExecutor
from harness.loader import load_contract_set
from harness.model import FalsifierOutcome, InvariantOutcome, Verdict
from harness.runner import run_contracts

from .conftest import simple_contract


def run(project, body: str, jobs: int = 2, **kw):
    project.contract("c", body)
    contracts = load_contract_set([project.root / "contracts"])
    return run_contracts(
        contracts,
        contracts.criteria,
        jobs=jobs,
        seed=7,
        root=project.root,
        default_timeout=30,
        **kw,
    )


def only(result):
    assert len(result.criteria) == 1
    return result.criteria[0]


def test_passing_invariant_with_killed_mutant_is_go(project):
    c = only(run(project, simple_contract()))
    assert c.invariants[0].outcome is InvariantOutcome.PASS
    assert c.falsifiers[0].outcome is FalsifierOutcome.KILLED
    assert c.verdict is Verdict.GO


def test_check_that_raises_is_error_and_run_goes_on(project):
    body = simple_contract(check="demochecks:boom")
    c = only(run(project, body))
    assert c.invariants[0].outcome is InvariantOutcome.ERROR
    assert "the check blew up" in c.invariants[0].message
    assert c.verdict is Verdict.NO_GO


def test_segfault_is_error_and_the_run_completes(project):
    project.contract(
        "ok",
        simple_contract(cid="AC-OK-001", inv="INV-OK-001").replace("name: ac-ok-001", "name: ok"),
    )
    result = run(project, simple_contract(check="demochecks:segfault"))
    by_id = {c.criterion_id: c for c in result.criteria}
    crashed = by_id["AC-DEMO-001"].invariants[0]
    assert crashed.outcome is InvariantOutcome.ERROR
    assert "SIGSEGV" in crashed.message
    assert by_id["AC-OK-001"].verdict is Verdict.GO


def test_timeout_is_error_and_the_run_completes(project):
    body = simple_contract(check="demochecks:sleepy", timeout=1)
    c = only(run(project, body))
    assert c.invariants[0].outcome is InvariantOutcome.ERROR
    assert "timed out after 1s" in c.invariants[0].message
    assert c.invariants[0].duration < 20


def test_skip_is_unproven_never_go(project):
    c = only(run(project, simple_contract(check="demochecks:skipper")))
    assert c.invariants[0].outcome is InvariantOutcome.SKIP
    assert c.verdict is Verdict.UNPROVEN
    assert any("needs a GPU" in r for r in c.reasons)


def test_mutant_that_stays_green_is_missed(project):
    body = simple_contract(
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: a mutant the check cannot see
    kind: mutant
    target: INV-DEMO-001
    mutant:
      patch: {"demochecks:boom": "demochecks:ok"}
"""
    )
    c = only(run(project, body))
    assert c.falsifiers[0].outcome is FalsifierOutcome.MISSED
    assert c.verdict is Verdict.UNPROVEN
    assert "INV-DEMO-001: mutant FALSIFY-DEMO-001 survived" in c.reasons


def test_refuting_fixture_by_params_is_killed(project):
    body = simple_contract(
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: a known-bad input
    kind: mutant
    target: INV-DEMO-001
    mutant:
      params: {value: 5}
"""
    )
    assert only(run(project, body)).falsifiers[0].outcome is FalsifierOutcome.KILLED


def test_mutant_naming_nothing_is_error(project):
    body = simple_contract(
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: a mutant of a function that does not exist
    kind: mutant
    target: INV-DEMO-001
    mutant:
      patch: {"demochecks:no_such_function": "demochecks:ok"}
"""
    )
    f = only(run(project, body)).falsifiers[0]
    assert f.outcome is FalsifierOutcome.ERROR
    assert "does not exist" in f.message


PROPERTY = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: mutant
    kind: mutant
    target: INV-DEMO-001
    mutant: {{params: {{x: 0}}}}
  - id: FALSIFY-DEMO-002
    title: search
    kind: property
    target: INV-DEMO-001
    property: {{strategy: "{strategy}", max_examples: 40}}
"""


def test_property_that_holds_survives(project):
    body = simple_contract(
        check="demochecks:square_is_nonneg",
        expect="square: {ge: 1}",
        params="{x: 3}",
        falsifiers=PROPERTY.format(strategy="demochecks:strategy_ints"),
    )
    c = only(run(project, body))
    prop = next(f for f in c.falsifiers if f.kind == "property")
    # x = 0 gives square 0 < 1: the search must find it and shrink to it
    assert prop.outcome is FalsifierOutcome.REFUTED
    assert prop.detail["counterexample"] == {"x": 0}
    assert c.verdict is Verdict.NO_GO


def test_property_search_survives_when_invariant_holds(project):
    body = simple_contract(
        check="demochecks:square_is_nonneg",
        expect="square: {ge: 0}",
        params="{x: 3}",
        falsifiers=PROPERTY.format(strategy="demochecks:strategy_ints").replace(
            "{params: {x: 0}}", "{params: {x: 0.5j}}"
        ),
    )
    c = only(
        run(
            project,
            body.replace(
                "{params: {x: 0.5j}}",
                '{patch: {"demochecks:square_is_nonneg": "demochecks:always_value_2"}}',
            ),
        )
    )
    prop = next(f for f in c.falsifiers if f.kind == "property")
    assert prop.outcome is FalsifierOutcome.SURVIVED
    assert "40 examples" in prop.message or "examples" in prop.message


def test_saved_counterexample_is_replayed_first(project, tmp_path):
    body = simple_contract(
        check="demochecks:positive_only",
        expect="x: {ge: 0}",
        params="{x: 1}",
        falsifiers=PROPERTY.format(strategy="demochecks:strategy_positive"),
    )
    evidence = tmp_path / "ev"
    first = only(run(project, body, evidence_root=evidence))
    prop = next(f for f in first.falsifiers if f.kind == "property")
    assert prop.outcome is FalsifierOutcome.REFUTED
    assert (project.root / "contracts" / ".regressions" / "FALSIFY-DEMO-002.json").exists()
    second = only(run(project, body, evidence_root=evidence))
    prop2 = next(f for f in second.falsifiers if f.kind == "property")
    assert prop2.outcome is FalsifierOutcome.REFUTED
    assert prop2.detail["replayed"] is True


def test_property_strategy_that_errors_is_error(project):
    body = simple_contract(falsifiers=PROPERTY.format(strategy="demochecks:strategy_broken"))
    c = only(run(project, body))
    prop = next(f for f in c.falsifiers if f.kind == "property")
    assert prop.outcome is FalsifierOutcome.ERROR
    assert "strategy exploded" in prop.message


FAULT = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: fault
    kind: fault
    target: INV-DEMO-001
    fault: {{injector: {injector}}}
"""


def test_fault_that_breaks_the_invariant_refutes_it(project):
    body = simple_contract(
        check="demochecks:reads_file",
        expect="intact: {eq: true}",
        falsifiers=FAULT.format(injector="flip_bytes"),
    )
    f = only(run(project, body)).falsifiers[0]
    assert f.outcome is FalsifierOutcome.REFUTED
    assert f.detail["injected"] is True


def test_fault_the_invariant_survives(project):
    # the invariant "reading gives some bytes" holds when a byte is flipped
    body = simple_contract(
        check="demochecks:reads_file",
        expect="intact: {in: [true, false]}",
        falsifiers=FAULT.format(injector="flip_bytes"),
    )
    assert only(run(project, body)).falsifiers[0].outcome is FalsifierOutcome.SURVIVED


def test_injector_that_never_injects_is_error(project):
    body = simple_contract(
        check="demochecks:ignores_fault", falsifiers=FAULT.format(injector="truncate_file")
    )
    f = only(run(project, body)).falsifiers[0]
    assert f.outcome is FalsifierOutcome.ERROR
    assert "did not inject" in f.message


def test_unknown_injector_is_error(project):
    body = simple_contract(
        check="demochecks:reads_file",
        expect="intact: {eq: true}",
        falsifiers=FAULT.format(injector="no_such_injector"),
    )
    f = only(run(project, body)).falsifiers[0]
    assert f.outcome is FalsifierOutcome.ERROR
    assert "no such injector" in f.message


def test_mutant_never_leaks_into_the_next_check_in_the_same_pool(project):
    body = simple_contract(
        check="demochecks:poisoned",
        expect="poisoned: {eq: false}",
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: poison the module global, then the clean check runs after it
    kind: mutant
    target: INV-DEMO-001
    mutant:
      patch: {"demochecks:poisoned": "demochecks:poison"}
""",
    )
    project.contract("c", body)
    contracts = load_contract_set([project.root / "contracts"])
    inv = contracts.invariants["INV-DEMO-001"]
    fal = contracts.falsifiers[0]
    from harness.judge import judge_task
    from harness.plan import CheckDone, Task

    def task(key, falsifier):
        return Task(
            key, inv, falsifier, 1, str(project.root / "checks" / key), 30, str(project.root)
        )

    ex = LocalProcessExecutor(jobs=1)
    results = [
        judge_task(e.task, e.observed)
        for e in ex.run(
            [task("INV-DEMO-001", None), task("FALSIFY-DEMO-001", fal), task("INV-DEMO-001b", None)]
        )
        if isinstance(e, CheckDone)
    ]
    ex.shutdown()
    assert results[0].outcome is InvariantOutcome.PASS
    assert results[1].outcome is FalsifierOutcome.KILLED
    assert results[2].outcome is InvariantOutcome.PASS  # the clean check after the mutant


def test_logs_artifacts_and_metrics_reach_the_evidence(project, tmp_path):
    result = run(project, simple_contract(check="demochecks:noisy"), evidence_root=tmp_path)
    folder = Path(result.evidence_dir) / "criteria" / "AC-DEMO-001"
    assert "to stdout" in (folder / "logs" / "INV-DEMO-001.stdout.txt").read_text()
    assert "fd level" in (folder / "logs" / "INV-DEMO-001.stderr.txt").read_text()
    assert (folder / "artifacts" / "INV-DEMO-001" / "thing.bin").read_bytes() == b"artifact bytes"
    assert '"loss"' in (folder / "metrics.jsonl").read_text()
    manifest = (folder / "manifest.json").read_text()
    assert "observations.jsonl" in manifest and "criterion.yaml" in manifest
    assert not (Path(result.evidence_dir) / "INCOMPLETE").exists()


def test_fast_profile_skips_mutants_and_reports_unproven_fast(project):
    c = only(run(project, simple_contract(), profile="fast"))
    assert c.falsifiers[0].outcome is FalsifierOutcome.NOT_RUN
    assert c.verdict is Verdict.UNPROVEN_FAST


def test_teeth_profile_runs_only_mutants(project):
    c = only(run(project, simple_contract(), profile="teeth"))
    assert c.invariants == ()
    assert c.falsifiers[0].outcome is FalsifierOutcome.KILLED
    assert c.verdict is Verdict.GO


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_do_not_depend_on_jobs(project, jobs):
    c = only(run(project, simple_contract(), jobs=jobs))
    assert c.verdict is Verdict.GO


def test_a_missed_mutant_names_the_by_name_import_the_patch_could_not_reach(project):
    """`from lib import double` made before the patch keeps the original: the mutant is
    MISSED, and the reason says which name and what to do."""
    (project.root / "lib.py").write_text("def double(x):\n    return 2 * x\n")
    (project.root / "chk.py").write_text(
        "from lib import double\n\n\ndef check(ctx):\n    return {'value': double(2)}\n\n\n"
        "def triple(x):\n    return 3 * x\n"
    )
    body = simple_contract(
        check="chk:check",
        expect="value: {eq: 4}",
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: triple is not double
    kind: mutant
    target: INV-DEMO-001
    mutant:
      patch: {"lib:double": "chk:triple"}
""",
    )
    c = only(run(project, body))
    (f,) = c.falsifiers
    assert f.outcome is FalsifierOutcome.MISSED
    assert "the patch could not reach chk.double (still lib:double)" in f.message
    assert any("call it through its module" in r for r in c.reasons)


def test_longest_first_starts_unknown_then_the_longest_checks(project, tmp_path):
    from harness.history import last_durations
    from harness.plan import Profile, longest_first, make_plan

    body = simple_contract()
    project.contract("c", body)
    project.contract("d", simple_contract(cid="AC-TWO-001", inv="INV-TWO-001").replace(
        "name: ac-two-001", "name: two"))  # fmt: skip
    result = run(project, body, evidence_root=project.root / "evidence")
    recorded = last_durations(project.root / "evidence")
    assert set(recorded) == {"INV-DEMO-001", "FALSIFY-DEMO-001", "INV-TWO-001", "FALSIFY-TWO-001"}
    assert recorded["INV-DEMO-001"] == result.criteria[0].invariants[0].duration
    contracts = load_contract_set([project.root / "contracts"])
    plan = make_plan(
        contracts, contracts.criteria, seed=1, profile=Profile.FULL,
        checks_dir=tmp_path, root=project.root, default_timeout=30,
    )  # fmt: skip
    durations = {"INV-DEMO-001": 1.0, "FALSIFY-DEMO-001": 5.0, "INV-TWO-001": 3.0}
    order = [t.key for t in longest_first(plan.tasks, durations)]
    assert order == ["FALSIFY-TWO-001", "FALSIFY-DEMO-001", "INV-TWO-001", "INV-DEMO-001"]
    assert last_durations(tmp_path / "nothing") == {}


CPU_CHECKS = """
import subprocess, sys, time

BURN = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass"

def burns_in_a_child(ctx):
    subprocess.run([sys.executable, "-c", BURN], check=True)
    return {"value": 1}

def sleeps_and_claims(ctx):
    time.sleep(0.5)
    return {"value": 1, "cpu": 99.0, "check_cpu": {"INV-SLEEP-001": 99.0}}
"""


def test_a_checks_cpu_is_the_kernels_count_with_what_it_waited_for(project):
    """The fork server reaps each worker with wait4: a check's CPU includes a process
    it started and waited for, and what a check says of its own CPU is never read."""
    (project.root / "cpuchecks.py").write_text(CPU_CHECKS)
    project.contract("s", simple_contract(
        check="cpuchecks:sleeps_and_claims", cid="AC-SLEEP-001", inv="INV-SLEEP-001",
        falsifiers="").replace("name: ac-sleep-001", "name: sleep"))  # fmt: skip
    result = run(project, simple_contract(check="cpuchecks:burns_in_a_child", falsifiers=""))
    cpu = result.check_cpu
    assert set(cpu) == {"INV-DEMO-001", "INV-SLEEP-001"}
    assert cpu["INV-DEMO-001"] >= 0.5  # the child's busy loop is the check's
    assert cpu["INV-SLEEP-001"] < 0.3  # half a second asleep, and its claim of 99 s ignored
    assert result.to_dict()["check_cpu"] == cpu


def test_a_check_holds_no_descriptor_of_the_fork_servers_log(project):
    """The worker's fd 1 and 2 went to the coordinator's pipes; the fork server's log they
    were before is not kept open, so a check cannot write lines into it."""
    (project.root / "fds.py").write_text(
        "import os\n\ndef open_files(ctx):\n    names = []\n"
        "    for fd in os.listdir('/proc/self/fd'):\n"
        "        try:\n            names.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
        "        except OSError:\n            pass\n"
        "    return {'value': 1, 'files': sorted(names)}\n"
    )
    c = only(run(project, simple_contract(check="fds:open_files", falsifiers="")))
    files = c.invariants[0].observations["files"]
    assert files and not [f for f in files if f.endswith("forkserver.log")], files


def test_a_dead_fork_server_leaves_no_cpu_report_to_wait_for(project):
    """A check kills the fork server: a new one runs the next check, and waiting for the
    CPU reports (at shutdown; after each check on Dask) is not held up by the dead
    server's workers, whose reports can never come."""
    from harness.plan import CheckDone, Task

    (project.root / "serverkiller.py").write_text(
        "import os, signal\n\ndef kill(ctx):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
        "    return {'value': 1}\n\ndef ok(ctx):\n    return {'value': 1}\n"
    )
    project.contract("c", simple_contract(check="serverkiller:kill", falsifiers=""))
    project.contract("d", simple_contract(
        check="serverkiller:ok", cid="AC-OK-001", inv="INV-OK-001", falsifiers=""
    ).replace("name: ac-ok-001", "name: ok"))  # fmt: skip
    invariants = load_contract_set([project.root / "contracts"]).invariants
    tasks = [
        Task(k, invariants[k], None, 1, str(project.root / "checks" / k), 30, str(project.root))
        for k in ("INV-DEMO-001", "INV-OK-001")
    ]
    ex = LocalProcessExecutor(1, root=project.root)
    try:
        list(ex.run(tasks[:1]))
        ex.await_exits(20.0)  # until the coordinator sees the server gone
        assert ex.control is None
        (done,) = [e for e in ex.run(tasks[1:]) if isinstance(e, CheckDone)]
        assert done.observed.status == "returned", done.observed.message
        begun = time.monotonic()
        ex.await_exits(20.0)
        assert time.monotonic() - begun < 10  # not the 20 s a lost report would hold it
        assert "INV-OK-001" in ex.cpu_seconds()
    finally:
        ex.shutdown()


def test_a_preload_named_module_function_is_called_once_before_every_check(
    project, capsys, monkeypatch
):
    # "module:function" in [tool.harness] preload: the fork server imports the module and
    # calls the function (kernels.warm:warm loads numba's compiled kernels), so every
    # forked check starts with what it left; one that fails is printed, never fatal, and
    # a package that is not installed (an optional extra) is skipped without a word
    (project.root / "warmmod.py").write_text(
        "import os\nCALLS = []\n\ndef warm():\n    CALLS.append(os.getpid())\n\n"
        "def broken():\n    raise RuntimeError('no cache here')\n"
    )
    (project.root / "warmchecks.py").write_text(
        "import warmmod\n\ndef warmed(ctx):\n    return {'calls': len(warmmod.CALLS)}\n"
    )
    project.contract("c", simple_contract(check="warmchecks:warmed", expect="calls: {eq: 1}"))
    contracts = load_contract_set([project.root / "contracts"])
    inv = contracts.invariants["INV-DEMO-001"]
    import harness.executor as executor_module
    from harness.judge import judge_task
    from harness.plan import CheckDone, Task

    monkeypatch.setattr(executor_module, "_PRELOAD_WARNED", set())
    preload = ["warmmod:warm", "warmmod:broken", "warmmod.typo", "not_installed_anywhere"]
    done = []
    for _ in range(2):  # a second fork server in this process (a second pytest item)
        ex = LocalProcessExecutor(jobs=1, preload=preload)
        try:
            tasks = [
                Task(k, inv, None, 1, str(project.root / "checks" / k), 30, str(project.root))
                for k in ("INV-DEMO-001", "INV-DEMO-001b")
            ]
            done += [
                judge_task(e.task, e.observed) for e in ex.run(tasks) if isinstance(e, CheckDone)
            ]
            info = ex.server_info
        finally:
            ex.shutdown()
    assert [r.outcome for r in done] == [InvariantOutcome.PASS] * 4, [r.message for r in done]
    assert "warmmod:warm" in info["preloaded"]
    assert "no cache here" in info["failed"]["warmmod:broken"]
    assert info["absent"] == ["not_installed_anywhere"]
    warned = [line for line in capsys.readouterr().err.splitlines() if "preload" in line]
    assert len(warned) == 2, warned  # once per process, not once per fork server
    assert "'warmmod.typo' did not load (ModuleNotFoundError" in warned[0]
    assert "'warmmod:broken' did not load (RuntimeError: no cache here)" in warned[1]
    assert all("Fix [tool.harness] preload in pyproject.toml" in line for line in warned)


def test_the_fork_server_preloads_from_begin_and_a_shutdown_meanwhile_ends_it(project):
    # begin() spawns the fork server without waiting: its preload runs while the
    # coordinator writes the bundle and starts services; the first check waits for it
    (project.root / "slowwarm.py").write_text(
        "import os, pathlib, time\n\ndef warm():\n"
        "    pathlib.Path('preloaded').write_text(str(os.getpid()))\n"
        "    time.sleep(float(os.environ.get('SLOW_WARM', '0')))\n"
    )
    (project.root / "warmchecks.py").write_text("def ok(ctx):\n    return {'calls': 1}\n")
    project.contract("c", simple_contract(check="warmchecks:ok", expect="calls: {eq: 1}"))
    inv = load_contract_set([project.root / "contracts"]).invariants["INV-DEMO-001"]
    from harness.judge import judge_task
    from harness.plan import CheckDone, Task

    marker = project.root / "preloaded"
    ex = LocalProcessExecutor(jobs=1, preload=["slowwarm:warm"], root=project.root)
    try:
        ex.begin()
        for _ in range(600):  # no check asked yet: the preload runs anyway
            if marker.exists():
                break
            time.sleep(0.05)
        assert marker.exists() and not ex.server_info
        task = Task("INV-DEMO-001", inv, None, 1, str(project.root / "checks" / "a"), 30,
                    str(project.root))  # fmt: skip
        done = [judge_task(e.task, e.observed) for e in ex.run([task]) if isinstance(e, CheckDone)]
    finally:
        ex.shutdown()
    assert [r.outcome for r in done] == [InvariantOutcome.PASS], [r.message for r in done]
    marker.unlink()

    # a run stopped while the fork server still preloads (Ctrl-C in a cold JIT's warm-up)
    # does not wait for the preload to end: the server is killed
    slow = LocalProcessExecutor(jobs=1, preload=["slowwarm:warm"], root=project.root,
                                env={**os.environ, "SLOW_WARM": "120"})  # fmt: skip
    slow.begin()
    server = slow.server
    assert server is not None
    for _ in range(600):
        if marker.exists():
            break
        time.sleep(0.05)
    t0 = time.monotonic()
    slow.shutdown(kill=True)  # not "stop" and a 10 s wait for a server that cannot read it
    assert time.monotonic() - t0 < 5
    assert server.returncode == -signal.SIGKILL and slow.server is None


def test_a_fork_server_that_never_says_ready_is_tried_twice_not_once_per_check(
    project, monkeypatch
):
    # a preload that hangs: the start timeout ends the server, the next check tries a
    # new one, and after a second failure the rest fail at once (not a timeout each)
    import harness.executor as executor_mod

    monkeypatch.setattr(executor_mod, "START_TIMEOUT", 1.0)
    (project.root / "hangwarm.py").write_text("import time\n\ndef warm():\n    time.sleep(600)\n")
    (project.root / "warmchecks.py").write_text("def ok(ctx):\n    return {'calls': 1}\n")
    project.contract("c", simple_contract(check="warmchecks:ok", expect="calls: {eq: 1}"))
    inv = load_contract_set([project.root / "contracts"]).invariants["INV-DEMO-001"]
    from harness.plan import CheckDone, Task

    ex = LocalProcessExecutor(jobs=1, preload=["hangwarm:warm"], root=project.root)
    tasks = [Task(f"INV-DEMO-{i}", inv, None, 1, str(project.root / "checks" / str(i)), 30,
                  str(project.root)) for i in range(4)]  # fmt: skip
    try:
        done = [e.observed for e in ex.run(tasks) if isinstance(e, CheckDone)]
    finally:
        ex.shutdown()
    messages = [o.message for o in done]
    assert len(done) == 4 and all("did not start" in m for m in messages), messages
    assert ["not tried again" in m for m in messages] == [False, False, True, True]


def test_what_a_crashed_or_timed_out_check_printed_reaches_the_evidence(project, tmp_path):
    # a check's stdout and stderr are pipes the coordinator reads while it runs: what a
    # worker wrote before it died (its faulthandler traceback too) or was killed is kept
    (project.root / "crashy.py").write_text(
        "import os, signal, time\n\n"
        "def crash(ctx):\n    print('before the crash', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)\n\n"
        "def hang(ctx):\n    print('before the hang', flush=True)\n    time.sleep(60)\n"
    )
    project.contract(
        "hang",
        simple_contract(
            check="crashy:hang", falsifiers="", timeout=2, cid="AC-DEMO-002", inv="INV-DEMO-002"
        ),
    )
    result = run(
        project, simple_contract(check="crashy:crash", falsifiers=""), evidence_root=tmp_path / "ev"
    )
    ev = Path(result.evidence_dir) / "criteria"
    logs = {c.criterion_id: ev / c.criterion_id / "logs" for c in result.criteria}
    crashed = logs["AC-DEMO-001"]
    assert (crashed / "INV-DEMO-001.stdout.txt").read_text() == "before the crash\n"
    assert (
        "Fatal Python error: Segmentation fault"
        in (crashed / "INV-DEMO-001.stderr.txt").read_text()
    )
    assert (logs["AC-DEMO-002"] / "INV-DEMO-002.stdout.txt").read_text() == "before the hang\n"


def test_a_run_without_evidence_still_starts_the_checks_that_took_longest_first(project):
    from click.testing import CliRunner

    from harness.cli import cli

    order = project.root / "order.txt"
    (project.root / "ordered.py").write_text(
        "import time\n\n"
        "def note(ctx):\n"
        "    with open(ctx.params['log'], 'a') as fh:\n"
        "        fh.write(ctx.params['name'] + '\\n')\n"
        "    time.sleep(ctx.params['sleep'])\n"
        "    return {'value': 1}\n"
    )
    for cid, name, sleep in (("AC-DEMO-001", "quick", 0.0), ("AC-DEMO-002", "slow", 0.8)):
        project.contract(
            name,
            simple_contract(
                check="ordered:note",
                falsifiers="",
                cid=cid,
                inv=f"INV{cid[2:]}",
                params=f"{{log: {str(order)!r}, name: {name}, sleep: {sleep}}}",
            ),
        )
    cli_run = CliRunner().invoke
    assert cli_run(cli, ["run", "-j", "1"], catch_exceptions=False).exit_code == 1  # UNPROVEN
    assert order.read_text().split() == ["quick", "slow"]  # no history: the contracts' order
    order.unlink()
    r = cli_run(cli, ["run", "-j", "1", "--no-evidence"], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    assert order.read_text().split() == ["slow", "quick"]  # the evidence's durations order it


SHARED = """
version: 1
contract: {name: shared, title: demo}
criteria:
  - {id: AC-DEMO-001, title: one, severity: blocker, references: [t], invariants: [INV-DEMO-001]}
  - id: AC-DEMO-002
    title: shares it and waits for another
    severity: blocker
    references: [t]
    invariants: [INV-DEMO-001, INV-DEMO-002]
  - {id: AC-DEMO-003, title: too, severity: blocker, references: [t], invariants: [INV-DEMO-001]}
invariants:
  - {id: INV-DEMO-001, title: a, check: {python: "demochecks:ok"}, expect: {value: {eq: 1}}}
  - {id: INV-DEMO-002, title: b, check: {python: "demochecks:ok"}, expect: {value: {eq: 1}}}
falsifiers:
  - id: FALSIFY-DEMO-001
    title: value 2 is not 1
    kind: mutant
    target: INV-DEMO-001
    mutant: {patch: {"demochecks:ok": "demochecks:always_value_2"}}
  - id: FALSIFY-DEMO-002
    title: value 2 is not 1
    kind: mutant
    target: INV-DEMO-002
    mutant: {patch: {"demochecks:ok": "demochecks:always_value_2"}}
"""


def test_an_invariant_two_criteria_list_completes_both_once_in_the_plans_order(project):
    # the coordinator judges a criterion once its last check is in, looking only at the
    # criteria that check is awaited by: an invariant shared by three criteria finishes
    # each once, and the one that also lists another invariant waits for it
    from harness.hooks import Listener

    project.contract("c", SHARED)
    finished: list[str] = []

    class Seen(Listener):
        def criterion_finished(self, result):
            finished.append(result.criterion_id)

    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts, contracts.criteria, jobs=1, seed=1, root=project.root, outputs=(Seen(),)
    )
    assert sorted(finished) == ["AC-DEMO-001", "AC-DEMO-002", "AC-DEMO-003"], finished
    ids = [c.criterion_id for c in result.criteria]
    assert ids == ["AC-DEMO-001", "AC-DEMO-002", "AC-DEMO-003"]
    assert all(c.verdict.value == "GO" for c in result.criteria), result.criteria
    two = result.criteria[1]
    assert {r.invariant_id for r in two.invariants} == {"INV-DEMO-001", "INV-DEMO-002"}
