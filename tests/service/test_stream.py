"""The event stream's seams: ``--sse-ping`` sets the keep-alive interval of a served
stream, and the route streams through the module-level ``training_event_stream`` (the
name a mutant replaces). A "ghost" run (a config and a running status whose pid is this
test's process) keeps a stream open without training anything."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kernels.service.app as service_app
from kernels.service.app import create_app
from tests.service.conftest import TestClient, parse_sse

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(sys.executable).with_name("harness")


def ghost_run(evidence: Path, run_id: str = "run-ghost", events: int = 0) -> str:
    run = evidence / "training" / run_id
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_id": run_id, "created_at": 1}))
    (run / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
    lines = [{"id": i, "event": "step", "data": {"step": i - 1}} for i in range(1, events + 1)]
    (run / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run_id


def test_sse_ping_sets_the_keep_alive_interval_of_the_served_stream(tmp_path):
    evidence = tmp_path / "evidence"
    run_id = ghost_run(evidence, events=2)
    proc = subprocess.Popen(
        [str(HARNESS), "core", "serve", "--port", "0", "--evidence", str(evidence),
         "--sse-ping", "0.2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KERNELS_AUDIT_LOG": str(tmp_path / "audit.jsonl")},
    )  # fmt: skip
    try:
        url = urlsplit(proc.stdout.readline().strip())
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", f"/api/events/training?run_id={run_id}",
                     headers={"Last-Event-ID": "1"})  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 200
        t0 = time.monotonic()
        items = []
        for item in parse_sse(iter(lambda: resp.readline().decode(), "")):
            items.append(item)
            if sum("comment" in x for x in items) == 4:
                break
        elapsed = time.monotonic() - t0
        conn.close()
        assert [x["id"] for x in items if "id" in x] == ["2"]  # after Last-Event-ID 1
        assert elapsed < 4  # four pings at 0.2 s, not at the default 15 s
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_route_streams_through_the_module_level_generator(tmp_path, monkeypatch):
    evidence = tmp_path / "evidence"
    run_id = ghost_run(evidence)
    calls: list[tuple[Any, ...]] = []

    async def one_event(store: Any, run: str, after: int, poll_s: float) -> AsyncIterator[Any]:
        calls.append((run, after, poll_s))
        yield service_app.ServerSentEvent(data="{}", event="probe", id="7")

    monkeypatch.setattr(service_app, "training_event_stream", one_event)
    app = create_app(evidence, audit_log=tmp_path / "audit.jsonl", sse_poll_s=0.25)
    with TestClient(app) as c:
        with c.stream("GET", f"/api/events/training?run_id={run_id}",
                      headers={"Last-Event-ID": "3"}) as s:  # fmt: skip
            events = [x for x in parse_sse(s.iter_lines()) if "comment" not in x]
    assert calls == [(run_id, 3, 0.25)]
    assert events == [{"id": "7", "event": "probe", "data": {}}]


def test_the_stream_waits_for_the_end_event_a_child_writes_after_its_final_status(tmp_path):
    # the child writes status "succeeded", then its "end" event, then exits: a stream
    # that looked between the two ended without "end" (the lost event AC-SVC-004's check
    # found on a loaded machine). While the child runs, a final status alone does not
    # end the stream; "end" does, and so does the child's exit
    import asyncio
    import threading

    from kernels.service.app import training_event_stream
    from kernels.service.runs import RunStore

    evidence = tmp_path / "evidence"
    run_id = ghost_run(evidence, events=2)
    run = evidence / "training" / run_id
    (run / "status.json").write_text(json.dumps({"status": "succeeded", "pid": os.getpid()}))
    store = RunStore(evidence / "training")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    store.procs[run_id] = child

    def write_end() -> None:  # the child stays alive until the stream has ended
        time.sleep(0.3)
        with (run / "events.jsonl").open("a") as fh:
            fh.write(json.dumps({"id": 3, "event": "end", "data": {"status": "succeeded"}}) + "\n")

    async def collect_from(rid: str) -> list[str]:
        stream = training_event_stream(store, rid, 0, 0.02)
        return await asyncio.wait_for(_events(stream), 30)  # it ends at "end", not at exit

    writer = threading.Thread(target=write_end)
    writer.start()
    try:
        events = asyncio.run(collect_from(run_id))
    finally:
        writer.join()
        child.kill()
        child.wait()
    assert events == ["step", "step", "end"]

    # a child that exits without writing "end": the stream ends once it has exited
    lone = ghost_run(evidence, run_id="run-lone", events=1)
    (evidence / "training" / lone / "status.json").write_text(json.dumps({"status": "failed"}))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.procs[lone] = gone
    assert asyncio.run(collect_from(lone)) == ["step"]


async def _events(stream: AsyncIterator[Any]) -> list[str]:
    return [ev.event async for ev in stream]
