"""``harness core serve`` as a process on an ephemeral loopback port: a real run end to
end, SSE with a Last-Event-ID reconnect over a real socket, DELETE, SIGTERM exiting 0
with the running training stopped at a checkpoint, and a restart listing the old runs."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.service.conftest import TERMINAL, parse_sse

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(sys.executable).with_name("harness")


def start(evidence: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(HARNESS), "core", "serve", "--port", "0", "--evidence", str(evidence),
         "--shutdown-timeout", "30"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() else "")
    return proc, url


def call(url: str, method: str, path: str, body: dict | None = None, headers=None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"content-type": "application/json",
                                                   **(headers or {})})  # fmt: skip
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), json.loads(payload) if payload else None


def wait_for(url: str, path: str, until, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, body = call(url, "GET", path)
            if until(status, body):
                return body
        except OSError:
            pass
        assert time.monotonic() < deadline, path
        time.sleep(0.1)


def sse(url: str, run_id: str, last_event_id: int | None = None, limit: int | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    conn.request("GET", f"/api/events/training?run_id={run_id}", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200
    lines = iter(lambda: resp.readline().decode(), "")  # de-chunked
    events = []
    for item in parse_sse(lines):
        if "comment" not in item:
            events.append(item)
            if limit is not None and len(events) == limit:
                break
    conn.close()  # drops the connection mid-stream when limit is reached
    return events


def test_serve_end_to_end_then_sigterm_exits_0_and_a_restart_lists_runs(tmp_path):
    evidence = tmp_path / "evidence"
    env = {**os.environ, "KERNELS_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    proc, url = start(evidence, env)
    try:
        ready = wait_for(url, "/readyz", lambda s, b: s == 200)
        assert ready["mocks"] is False and ready["phase"] == "stage1"

        status, headers, body = call(
            url, "POST", "/api/training/runs", {"family": "mlp", "steps": 12, "batch_size": 16}
        )
        assert status == 201 and headers["location"].endswith(body["run_id"])
        assert headers["content-type"] == "application/json; charset=utf-8"
        run_id = body["run_id"]
        first = sse(url, run_id, limit=4)
        rest = sse(url, run_id, last_event_id=int(first[-1]["id"]))
        ids = [int(e["id"]) for e in first + rest]
        assert ids == list(range(1, len(ids) + 1)) and rest[-1]["event"] == "end"
        _, _, metrics = call(url, "GET", f"/api/training/runs/{run_id}/metrics")
        lines = (evidence / "training" / run_id / "metrics.jsonl").read_text().splitlines()
        assert metrics["metrics"] == [json.loads(x) for x in lines] and len(lines) == 13

        long_run = {"family": "mlp", "steps": 100_000, "batch_size": 16}
        _, _, body = call(url, "POST", "/api/training/runs", long_run)
        deleted = body["run_id"]
        wait_for(url, f"/api/training/runs/{deleted}", lambda s, b: b["step"] >= 1)
        assert call(url, "DELETE", f"/api/training/runs/{deleted}")[0] == 202
        st = wait_for(url, f"/api/training/runs/{deleted}", lambda s, b: b["status"] in TERMINAL)
        assert st["status"] == "cancelled" and st["checkpoint_count"] >= 1

        _, _, body = call(url, "POST", "/api/training/runs", long_run)
        running = body["run_id"]
        wait_for(url, f"/api/training/runs/{running}", lambda s, b: b["step"] >= 1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) == 0, proc.stderr.read()
        assert time.monotonic() - t0 < 45
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = evidence / "training" / running
    final = json.loads((run / "status.json").read_text())
    assert final["status"] == "cancelled" and final["stopped_by"] == "shutdown"
    assert (run / "checkpoints" / f"ckpt-{final['step']:06d}").is_dir()

    proc, url = start(evidence, env)
    try:
        _, _, body = call(url, "GET", "/api/training/runs")
        assert {r["run_id"] for r in body["runs"]} == {run_id, deleted, running}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_listening_socket_is_tcp_so_connections_get_nodelay():
    """asyncio sets TCP_NODELAY on an accepted connection only when the socket's proto
    is IPPROTO_TCP; with proto 0, every request after the first on a keep-alive
    connection waited out the client's delayed ACK (about 40 ms)."""
    import socket

    from kernels.service.server import loopback_socket

    sock = loopback_socket("127.0.0.1", 0)
    client = socket.create_connection(sock.getsockname()[:2])
    conn, _ = sock.accept()
    try:
        assert sock.proto == socket.IPPROTO_TCP and conn.proto == socket.IPPROTO_TCP
    finally:
        for s in (conn, client, sock):
            s.close()
