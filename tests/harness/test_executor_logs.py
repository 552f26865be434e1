"""A check's stdout and stderr: pipes the coordinator reads (harness.executor._Log)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from harness.executor import MEMORY_KEPT, LocalProcessExecutor, _Log
from harness.judge import judge_task
from harness.loader import load_contract_set
from harness.model import InvariantOutcome
from harness.plan import CheckDone, CheckStarted, Task

from .conftest import simple_contract


def _log_through_a_pipe(data: bytes, cap: int) -> _Log:
    r, w = os.pipe()
    os.set_blocking(r, False)
    log = _Log("stdout", r, cap)

    def write() -> None:
        with os.fdopen(w, "wb") as fh:
            fh.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    while log.open:
        log.drain()
        time.sleep(0.001)
    writer.join()
    return log


def test_a_long_log_spills_out_of_memory_and_is_written_whole(tmp_path):
    data = bytes(range(256)) * (3 * MEMORY_KEPT // 256)  # 3 MiB: kept, not all in memory
    log = _log_through_a_pipe(data, cap=10 * MEMORY_KEPT)
    assert len(log.data) == MEMORY_KEPT and log.spill is not None
    log.save(tmp_path / "check")
    assert (tmp_path / "check" / "stdout.txt").read_bytes() == data


def test_a_log_beyond_the_limit_keeps_its_head_and_its_true_size(tmp_path):
    log = _log_through_a_pipe(b"x" * 5000, cap=1000)
    log.save(tmp_path)
    out = tmp_path / "stdout.txt"
    assert out.stat().st_size == 5000 and out.read_bytes()[:1000] == b"x" * 1000
    assert out.read_bytes()[1000:] == b"\0" * 4000  # sparse: the size, not the bytes


def test_a_log_that_cannot_be_written_is_reported_and_the_run_goes_on(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the check's folder should be")
    log = _log_through_a_pipe(b"hello\n", cap=1000)
    log.save(blocker / "check")  # no exception: a full disk must not end the run
    assert "could not write" in capsys.readouterr().err
    assert not log.open


def _tasks(project, check: str, timeout: float) -> list[Task]:
    project.contract("c", simple_contract(check=check, falsifiers=""))
    inv = load_contract_set([project.root / "contracts"]).invariants["INV-DEMO-001"]
    key = "INV-DEMO-001"
    return [Task(key, inv, None, 1, str(project.root / "checks" / key), timeout, str(project.root))]


def test_a_caller_holding_an_event_does_not_time_out_a_chatty_check(project):
    # a check that printed more than a pipe holds waits for the coordinator to read; a
    # coordinator held up by its caller (a pager, ^S) must not call that a timeout
    (project.root / "chatty.py").write_text(
        "import sys\n\ndef talk(ctx):\n    sys.stdout.write('y' * 1_000_000)\n"
        "    sys.stdout.flush()\n    return {'value': 1}\n"
    )
    ex = LocalProcessExecutor(jobs=1)
    results = []
    try:
        for event in ex.run(_tasks(project, "chatty:talk", timeout=2)):
            if isinstance(event, CheckStarted):
                time.sleep(3.5)  # the caller is busy; nobody drains the pipe
            if isinstance(event, CheckDone):
                results.append(judge_task(event.task, event.observed))
    finally:
        ex.shutdown()
    assert [r.outcome for r in results] == [InvariantOutcome.PASS], results[0].message
    out = project.root / "checks" / "INV-DEMO-001" / "stdout.txt"
    assert out.stat().st_size == 1_000_000


def test_what_a_check_printed_before_ctrl_c_is_kept_in_its_folder(project):
    (project.root / "slowtalk.py").write_text(
        "import time\n\ndef talk(ctx):\n    print('working on it', flush=True)\n"
        "    time.sleep(60)\n    return {'value': 1}\n"
    )
    ex = LocalProcessExecutor(jobs=1)
    events = ex.run(_tasks(project, "slowtalk:talk", timeout=120))
    assert isinstance(next(events), CheckStarted)
    time.sleep(1.5)  # it has printed and sleeps
    ex.shutdown(kill=True)  # what the runner does on ^C
    out = Path(project.root / "checks" / "INV-DEMO-001" / "stdout.txt")
    assert out.read_text() == "working on it\n"
