"""The training service through Starlette's TestClient: bodies, statuses, headers,
governance, a real run's evidence, SSE with Last-Event-ID, DELETE, a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kernels.service.app import MocksRefused, Readiness, create_app
from tests.service.conftest import (
    TERMINAL,
    TestClient,
    assert_seed_headers,
    parse_sse,
    wait_ready,
    wait_status,
)

REPO = Path(__file__).resolve().parents[2]
SMALL_RUN = {"family": "mlp", "model_size": "micro", "steps": 8, "batch_size": 16}


def test_kernels_imports_without_the_service_extra():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn', 'sse_starlette', 'starlette'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import kernels, kernels.cli, kernels.service, kernels.service.runs\n"
        "import kernels.service.child, kernels.service.server\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_health_and_readiness_say_no_mocks_stage1(client):
    health = client.get("/healthz")
    ready = client.get("/readyz")
    assert health.status_code == 200 and ready.status_code == 200
    for r in (health, ready):
        assert_seed_headers(r)
        assert r.json()["mocks"] is False and r.json()["phase"] == "stage1"
    assert ready.json()["ready"] is True
    assert set(ready.json()["datasets"].values()) == {"ok"}


def test_readyz_is_503_until_loaded(evidence, monkeypatch):
    gate = threading.Event()
    real_load = Readiness.load
    monkeypatch.setattr(Readiness, "load", lambda self: (gate.wait(30), real_load(self)))
    with TestClient(create_app(evidence)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert r.json()["mocks"] is False
        assert_seed_headers(r)
        assert c.get("/healthz").status_code == 200
        gate.set()
        wait_ready(c)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"steps": 4}, "family"),
        ({"family": "mlp", "steps": "4"}, "steps"),
        ({"family": "mlp", "steps": 0}, "steps"),
        ({"family": "bert", "steps": 4}, "family"),
        ({"family": "mlp", "steps": 4, "model_size": "huge"}, "model_size"),
        ({"family": "mlp", "steps": 4, "colour": "red"}, "colour"),
        ({"family": "mlp", "steps": 4, "dataset": "nope"}, "dataset"),
        ({"family": "mlp", "steps": 4, "dataset": "pystdlib"}, "dataset"),
        ({"family": "gpt2", "steps": 4, "dataset": "digits"}, "dataset"),
        ({"family": "mlp", "steps": 4, "dataset": "../etc"}, "dataset"),
    ],
)
def test_bad_bodies_are_422_problems_naming_the_field(client, evidence, body, field):
    r = client.post("/api/training/runs", json=body)
    assert r.status_code == 422, r.text
    assert_seed_headers(r, problem=True)
    problem = r.json()
    assert problem["status"] == 422 and problem["field"] == field
    assert field in problem["detail"]
    assert not (evidence / "training").exists() or not any((evidence / "training").iterdir())


def test_not_json_is_a_422_problem(client):
    headers = {"content-type": "application/json"}
    r = client.post("/api/training/runs", content=b"{", headers=headers)
    assert r.status_code == 422
    assert_seed_headers(r, problem=True)
    assert r.json()["field"] == "body" and r.json()["errors"][0]["field"] == "body"


def test_governance_refusal_is_403_naming_the_rule(evidence, tmp_path):
    policy = (REPO / "datasets" / "policy.yaml").read_text()
    denied = tmp_path / "policy.yaml"
    denied.write_text(policy.replace("  deny: []", "  deny: [digits]", 1))
    app = create_app(evidence, policy=denied, audit_log=tmp_path / "audit.jsonl")
    with TestClient(app) as c:
        r = c.post("/api/training/runs", json=SMALL_RUN)
    assert r.status_code == 403, r.text
    assert_seed_headers(r, problem=True)
    assert r.json()["rule"] and r.json()["rule"] in r.json()["detail"]
    assert r.json()["dataset"] == "digits"
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any("refused" in json.dumps(e) for e in audit)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/training/runs/run-x"),
        ("GET", "/api/training/runs/run-x/metrics"),
        ("DELETE", "/api/training/runs/run-x"),
        ("GET", "/api/events/training?run_id=run-x"),
        ("POST", "/api/generate"),
    ],
)
def test_unknown_runs_are_404_problems(client, method, path):
    body = {"run_id": "run-x"} if method == "POST" else None
    r = client.request(method, path, json=body)
    assert r.status_code == 404, r.text
    assert_seed_headers(r, problem=True)
    assert "run-x" in r.json()["detail"]


def test_mocks_disabled_refuses_a_configured_mock(evidence, monkeypatch):
    create_app(evidence, mocks=("simulated-metrics",))  # allowed without MOCKS_DISABLED
    monkeypatch.setenv("MOCKS_DISABLED", "1")
    create_app(evidence)  # nothing configured: starts
    with pytest.raises(MocksRefused, match="simulated-metrics"):
        create_app(evidence, mocks=("simulated-metrics",))
    from click.testing import CliRunner

    from kernels.cli import core

    out = CliRunner().invoke(core, ["serve", "--evidence", str(evidence), "--mock", "sim"])
    assert out.exit_code == 1 and "MOCKS_DISABLED=1" in out.output


def test_serve_refuses_a_non_loopback_host(evidence):
    from click.testing import CliRunner

    from kernels.cli import core

    out = CliRunner().invoke(core, ["serve", "--evidence", str(evidence), "--host", "0.0.0.0"])
    assert out.exit_code == 1 and "loopback" in out.output


def read_events(client, run_id, last_event_id=None, limit=None):
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    events, comments = [], 0
    with client.stream("GET", f"/api/events/training?run_id={run_id}", headers=headers) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        assert s.headers["cache-control"] == "no-store"
        for item in parse_sse(s.iter_lines()):
            if "comment" in item:
                comments += 1
                continue
            events.append(item)
            if limit is not None and len(events) == limit:
                break
    return events, comments


def test_a_run_writes_the_evidence_and_streams_every_step_and_checkpoint(client, evidence):
    r = client.post("/api/training/runs", json=SMALL_RUN)
    assert r.status_code == 201, r.text
    assert_seed_headers(r)
    run_id = r.json()["run_id"]
    assert r.headers["location"] == f"/api/training/runs/{run_id}"

    first, _ = read_events(client, run_id, limit=5)
    rest, _ = read_events(client, run_id, last_event_id=first[-1]["id"])
    events = first + rest
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate across the reconnect
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded"

    st = client.get(f"/api/training/runs/{run_id}").json()
    assert st["status"] == "succeeded" and st["step"] == 8
    assert st["metrics_count"] == 9 and st["checkpoint_count"] == 4  # every 8 // 4 steps

    run = evidence / "training" / run_id
    for name in ("config.json", "provenance.json", "metrics.jsonl", "checkpoints"):
        assert (run / name).exists(), name
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    metrics = client.get(f"/api/training/runs/{run_id}/metrics")
    assert_seed_headers(metrics)
    assert metrics.json()["metrics"] == lines
    assert [e["data"] for e in events if e["event"] == "step"] == lines
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["ckpt-000002", "ckpt-000004", "ckpt-000006", "ckpt-000008"]
    assert [e["data"]["name"] for e in events if e["event"] == "checkpoint"] == ckpts
    for name in ckpts:
        assert not (run / "checkpoints" / name).is_symlink()
        for f in (run / name).iterdir():
            assert (run / "checkpoints" / name / f.name).read_bytes() == f.read_bytes()
    assert json.loads((run / "config.json").read_text())["request"]["steps"] == 8

    again, _ = read_events(client, run_id, last_event_id=ids[-1])
    assert again == []  # a finished run: nothing after the last id

    listed = client.get("/api/training/runs").json()["runs"]
    assert [x["run_id"] for x in listed] == [run_id]


def test_sse_sends_keep_alive_comments_while_waiting(client):
    run_id = client.post("/api/training/runs", json={**SMALL_RUN, "steps": 100_000}).json()[
        "run_id"
    ]
    try:
        with client.stream("GET", f"/api/events/training?run_id={run_id}",
                           headers={"Last-Event-ID": str(10**9)}) as s:  # fmt: skip
            for item in parse_sse(s.iter_lines()):
                assert "comment" in item  # no event id beyond 10**9: only pings
                break
    finally:
        client.delete(f"/api/training/runs/{run_id}")
        wait_status(client, run_id, lambda st: st["status"] in TERMINAL)


def test_delete_stops_at_the_next_step_with_a_checkpoint(client, evidence):
    run_id = client.post("/api/training/runs", json={**SMALL_RUN, "steps": 100_000}).json()[
        "run_id"
    ]
    wait_status(client, run_id, lambda st: st["step"] >= 1)
    r = client.delete(f"/api/training/runs/{run_id}")
    assert r.status_code == 202 and r.json()["stopped_by"] == "DELETE"
    assert_seed_headers(r)
    st = wait_status(client, run_id, lambda st: st["status"] in TERMINAL)
    assert st["status"] == "cancelled" and 1 <= st["step"] < 100_000
    final = f"ckpt-{st['step']:06d}"
    run = evidence / "training" / run_id
    assert (run / "checkpoints" / final / "model.safetensors").is_file()
    assert (run / "latest").read_text().strip() == final
    assert client.delete(f"/api/training/runs/{run_id}").status_code == 200  # already ended


def test_a_restarted_service_lists_old_runs(client, evidence, tmp_path):
    run_id = client.post("/api/training/runs", json=SMALL_RUN).json()["run_id"]
    wait_status(client, run_id, lambda st: st["status"] in TERMINAL)
    ghost = evidence / "training" / "run-ghost"
    ghost.mkdir()
    (ghost / "config.json").write_text('{"run_id": "run-ghost", "created_at": 1}')
    (ghost / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 7}))
    with TestClient(create_app(evidence, audit_log=tmp_path / "audit.jsonl")) as c:
        runs = {x["run_id"]: x for x in c.get("/api/training/runs").json()["runs"]}
    assert runs[run_id]["status"] == "succeeded"
    assert runs["run-ghost"]["status"] == "failed" and "interrupted" in runs["run-ghost"]["error"]


def test_generate_refuses_a_classifier_run(client):
    run_id = client.post("/api/training/runs", json=SMALL_RUN).json()["run_id"]
    wait_status(client, run_id, lambda st: st["status"] in TERMINAL)
    r = client.post("/api/generate", json={"run_id": run_id, "prompt": "x"})
    assert r.status_code == 422 and r.json()["field"] == "run_id"
    assert_seed_headers(r, problem=True)
    r = client.post("/api/generate", json={"run_id": run_id, "checkpoint": "ckpt-000099"})
    assert r.status_code == 404


@pytest.mark.slow
def test_generate_from_a_language_model_run(client):
    body = {"family": "gpt2", "model_size": "micro", "steps": 2, "batch_size": 2}
    run_id = client.post("/api/training/runs", json=body).json()["run_id"]
    st = wait_status(client, run_id, lambda st: st["status"] in TERMINAL, timeout=300)
    assert st["status"] == "succeeded", st
    r = client.post("/api/generate", json={"run_id": run_id, "prompt": "def ",
                                           "max_new_tokens": 8})  # fmt: skip
    assert r.status_code == 200, r.text
    assert_seed_headers(r)
    assert r.json()["text"].startswith("def ") and r.json()["kv_cache"] is True
    assert r.json()["checkpoint"] == "ckpt-000002"


def test_every_route_is_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/training/runs", "/api/training/runs/{run_id}", "/api/generate",
            "/api/training/runs/{run_id}/metrics", "/api/events/training",
            "/healthz", "/readyz"} <= set(paths)  # fmt: skip
