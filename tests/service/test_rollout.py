"""Resume through the API, the trainer that stops when its service dies, the model cache
of generation, the listening socket, and the canary router (against stand-in backends:
small HTTP servers of the test's own; contracts/service.yaml drives it against real
service processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from auditchain import read_events, verify_chain
from kernels.service import router as router_mod
from kernels.service.runs import PARENT_ENV
from kernels.service.server import loopback_socket
from tests.service.conftest import TERMINAL, assert_seed_headers, wait_status

REPO = Path(__file__).resolve().parents[2]
RUN = {"family": "mlp", "model_size": "micro", "steps": 24, "batch_size": 16, "seed": 5}


# ---------------------------------------------------------------- resume


def test_resume_continues_a_cancelled_run_to_the_bytes_of_one_never_stopped(client, evidence):
    stopped = client.post("/api/training/runs", json={**RUN, "steps": 200}).json()["run_id"]
    wait_status(client, stopped, lambda st: st["step"] >= 3)
    client.delete(f"/api/training/runs/{stopped}")
    st = wait_status(client, stopped, lambda st: st["status"] in TERMINAL)
    assert st["status"] == "cancelled" and st["step"] < 200
    run = evidence / "training" / stopped
    latest = int((run / "latest").read_text().strip().split("-")[-1])

    r = client.post(f"/api/training/runs/{stopped}/resume")
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/training/runs/{stopped}"
    assert_seed_headers(r)
    assert client.post(f"/api/training/runs/{stopped}/resume").status_code == 409  # running
    done = wait_status(client, stopped, lambda st: st["status"] in TERMINAL, timeout=120)
    assert done["status"] == "succeeded" and done["step"] == 200

    whole = client.post("/api/training/runs", json={**RUN, "steps": 200}).json()["run_id"]
    wait_status(client, whole, lambda st: st["status"] in TERMINAL, timeout=120)
    status = {r: json.loads((evidence / "training" / r / "status.json").read_text())
              for r in (stopped, whole)}  # fmt: skip
    assert status[stopped]["weights_sha256"] == status[whole]["weights_sha256"]
    assert status[stopped]["resumed_from_step"] == latest
    assert status[stopped]["previous"]["status"] == "cancelled"
    resumed = [json.loads(x) for x in (run / "resources.jsonl").read_text().splitlines()]
    assert {x["from_step"] for x in resumed if x["resumed"]} == {latest}
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert [e["data"]["step"] for e in events if e["event"] == "resume"] == [latest]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))  # ids go on


def test_resume_is_refused_for_a_run_that_succeeded_and_for_an_unknown_one(client):
    run_id = client.post("/api/training/runs", json={**RUN, "steps": 4}).json()["run_id"]
    wait_status(client, run_id, lambda st: st["status"] in TERMINAL)
    r = client.post(f"/api/training/runs/{run_id}/resume")
    assert r.status_code == 409 and "finished" in r.json()["detail"]
    assert_seed_headers(r, problem=True)
    r = client.post("/api/training/runs/run-nope/resume")
    assert r.status_code == 404
    assert_seed_headers(r, problem=True)


def test_a_trainer_whose_service_is_gone_stops_at_a_checkpoint(tmp_path):
    """The child watches the service that started it (``KERNELS_SERVICE_PID``); here that
    pid is not its parent, as after the service died, so it stops after its first step."""
    run = tmp_path / "run-orphan"
    run.mkdir()
    train_config = {"family": "mlp", "model": {"hidden": [32]}, "steps": 10_000, "batch_size": 16,
                    "eval_every": 5000, "ckpt_every": 5000, "warmup": 1, "threads": 1}  # fmt: skip
    (run / "config.json").write_text(json.dumps({"run_id": run.name, "train_config": train_config}))
    env = {**os.environ, PARENT_ENV: str(os.getpid() + 1_000_000),
           "KERNELS_AUDIT_LOG": str(tmp_path / "audit.jsonl")}  # fmt: skip
    code = subprocess.run([sys.executable, "-m", "kernels.service.child", str(run)], cwd=REPO,
                          env=env, timeout=120, capture_output=True).returncode  # fmt: skip
    st = json.loads((run / "status.json").read_text())
    assert code == 0 and st["status"] == "cancelled" and st["stopped_by"] == "service-lost"
    assert 1 <= st["step"] < 10_000
    assert (run / "latest").read_text().strip() == f"ckpt-{st['step']:06d}"
    assert (run / "checkpoints" / f"ckpt-{st['step']:06d}" / "model.safetensors").is_file()


# ---------------------------------------------------------------- generation's model cache


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from kernels.train import TrainConfig, train

    out = tmp_path_factory.mktemp("lm")
    env = pytest.MonkeyPatch()
    env.setenv("KERNELS_AUDIT_LOG", str(out / "audit.jsonl"))  # never the repository's log
    model = {"n_layer": 1, "d_model": 16, "n_head": 2, "n_ctx": 16}
    cfg = TrainConfig(family="gpt2", model=model, steps=1, batch_size=2, eval_every=1,
                      ckpt_every=1, warmup=1, eval_windows=2)  # fmt: skip
    try:
        yield train(cfg, out / "run").checkpoint
    finally:
        env.undo()


def test_generation_loads_a_checkpoint_once_and_again_when_it_changes(lm_checkpoint, tmp_path):
    import shutil

    from kernels.checkpoint import CheckpointError
    from kernels.service.generation import MODELS, ModelCache, generate_text
    from kernels.serving import generate_from_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(lm_checkpoint, ckpt)
    loads = MODELS.loads
    texts = {generate_text(ckpt, "def ", 8) for _ in range(3)}
    assert texts == {generate_from_checkpoint(ckpt, "def ", 8)} and MODELS.loads == loads + 1

    cache = ModelCache(size=2)
    first = cache.get(ckpt)
    assert cache.get(ckpt) is first and cache.loads == 1
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # the weights no longer match their digest
    weights.write_bytes(bytes(data))
    for _ in range(2):  # refused every time: a failed load is never cached
        with pytest.raises(CheckpointError):
            cache.get(ckpt)
    assert cache.loads == 1


def test_the_listening_socket_says_tcp_so_asyncio_turns_nagle_off():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with 0, every
    keep-alive response waited ~40 ms for the client's delayed ACK."""
    sock = loopback_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


# ---------------------------------------------------------------- the canary router


class StandIn:
    """A stand-in backend: answers ``POST /api/generate`` with its run id (or ``fail``)."""

    def __init__(self, fail: int | None = None, delay_s: float = 0.0) -> None:
        self.fail = fail
        self.delay_s = delay_s
        self.hits = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stand_in.hits += 1
                time.sleep(stand_in.delay_s)
                status = stand_in.fail or 200
                answer = {"run_id": body["run_id"], "checkpoint": body.get("checkpoint")}
                out = json.dumps(answer if status == 200 else {"status": status}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.retired = False

    def retire(self) -> None:
        self.retired = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_ins() -> Iterator[list[StandIn]]:
    made: list[StandIn] = []
    yield made
    for s in made:
        if not s.retired:
            s.retire()


def make_router(
    stand_ins: list[StandIn], fail: int | None, audit: Path, delay_s: float = 0.0
) -> Any:
    cur, cand = StandIn(), StandIn(fail, delay_s)
    stand_ins.extend([cur, cand])
    return router_mod.CanaryRouter(
        router_mod.Backend(cur.url, "run-current", "ckpt-000004", "aa", on_retire=cur.retire),
        router_mod.Backend(cand.url, "run-candidate", "ckpt-000008", "bb", on_retire=cand.retire),
        audit_log=str(audit),
    )


def traffic(router: Any, stop: threading.Event, sessions: list[str]) -> threading.Thread:
    def loop() -> None:
        n = 0
        while not stop.is_set():
            session = f"s{n // 2}"  # sessions of two requests
            if session not in sessions:
                sessions.append(session)
            router.forward({"prompt": "x"}, session)
            n += 1

    thread = threading.Thread(target=loop)
    thread.start()
    return thread


def test_the_weight_splits_new_sessions_and_a_session_stays_on_its_backend(stand_ins, tmp_path):
    router = make_router(stand_ins, None, tmp_path / "audit.jsonl")
    router.set_weight(0.1)
    first = [router.forward({"prompt": "x"}, f"s{i}") for i in range(50)]
    assert [r.backend for r in first].count("candidate") == 5
    again = [router.forward({"prompt": "x"}, f"s{i}") for i in range(50)]
    assert [r.backend for r in again] == [r.backend for r in first]  # sticky
    assert all(r.body["run_id"] == f"run-{r.backend}" for r in first)
    assert all(r.body["checkpoint"] == ("ckpt-000008" if r.backend == "candidate" else
                                        "ckpt-000004") for r in first)  # fmt: skip


def rollout_under_traffic(router):
    """Roll out while clients keep sending; the result and the clients' sessions."""
    stop, sessions = threading.Event(), []
    thread = traffic(router, stop, sessions)
    try:
        result = router.rollout(router_mod.Policy(min_requests=5, step_timeout_s=20))
    finally:
        stop.set()
        thread.join()
    return result, sessions


def test_a_good_candidate_is_promoted_and_the_old_model_retired(stand_ins, tmp_path):
    audit = tmp_path / "audit.jsonl"
    router = make_router(stand_ins, None, audit)
    result, sessions = rollout_under_traffic(router)
    assert result.promoted and [s["weight"] for s in result.steps] == [0.1, 0.5]
    assert stand_ins[0].retired and not stand_ins[1].retired
    assert {router.forward({"prompt": "x"}, s).backend for s in sessions} == {"candidate"}
    events = [e["event"] for e in read_events(audit)]
    assert events == ["canary.decision", "model.serve"] and not verify_chain(audit)[2]


def test_a_failing_candidate_is_rolled_back_at_the_first_step(stand_ins, tmp_path):
    audit = tmp_path / "audit.jsonl"
    router = make_router(stand_ins, 500, audit)
    result, sessions = rollout_under_traffic(router)
    assert not result.promoted and len(result.steps) == 1 and "error rate" in result.reason
    assert stand_ins[1].retired and not stand_ins[0].retired
    hits = stand_ins[1].hits
    after = [router.forward({"prompt": "x"}, s) for s in sessions]  # pinned ones included
    assert {r.backend for r in after} == {"current"} and {r.status for r in after} == {200}
    assert stand_ins[1].hits == hits
    events = read_events(audit)
    assert [e["event"] for e in events] == ["canary.decision", "canary.rollback"]
    assert events[0]["accepted"] is False and events[1]["candidate_sha256"] == "bb"


def test_a_candidate_slower_by_more_than_the_ratio_and_the_floor_is_rolled_back(
    stand_ins, tmp_path
):
    router = make_router(stand_ins, None, tmp_path / "audit.jsonl", delay_s=0.05)
    result, _ = rollout_under_traffic(router)
    assert not result.promoted and len(result.steps) == 1, result.reason
    assert "median latency" in result.reason and stand_ins[1].retired


def samples(backend: str, latencies_ms: list[float]) -> list[Any]:
    return [router_mod.Routed(backend, 200, {}, ms / 1e3, 1) for ms in latencies_ms]


def test_latency_fails_a_step_only_when_slower_by_the_ratio_and_by_the_floor():
    policy = router_mod.Policy(min_requests=3, max_latency_ratio=3.0, min_latency_increase_ms=25)
    # a loaded host: 4.4 x apart, but 7 ms: scheduling, not the candidate
    noisy = router_mod.judge_step(0.5, samples("current", [2, 2.1, 3]),
                                  samples("candidate", [9, 9.5, 12]), policy)  # fmt: skip
    assert noisy["passed"] and noisy["latency_ratio"] > 4
    # 40 ms slower and 5 x: a slower model
    slow = router_mod.judge_step(0.5, samples("current", [10, 10, 10]),
                                 samples("candidate", [50, 50, 50]), policy)  # fmt: skip
    assert not slow["passed"] and "median latency 50.0 ms, 5.00 x current" in slow["reasons"][0]
    # 100 ms slower but 2 x: within the ratio
    within = router_mod.judge_step(0.5, samples("current", [100, 100, 100]),
                                   samples("candidate", [200, 200, 200]), policy)  # fmt: skip
    assert within["passed"]


def test_a_step_without_enough_traffic_fails_closed(stand_ins, tmp_path):
    router = make_router(stand_ins, None, tmp_path / "audit.jsonl")
    t0 = time.monotonic()
    result = router.rollout(router_mod.Policy(min_requests=5, step_timeout_s=0.2))
    assert not result.promoted and "too little traffic" in result.reason
    assert time.monotonic() - t0 < 5 and stand_ins[1].retired


def test_a_policy_refuses_steps_that_are_not_shares():
    with pytest.raises(ValueError):
        router_mod.Policy.from_dict({"steps": [0.5, 0.1, 1.0]})
    with pytest.raises(ValueError):
        router_mod.Policy.from_dict({"steps": [10, 50, 100]})
    assert router_mod.Policy.from_dict({"steps": [0.2, 1]}).steps == (0.2, 1.0)
    for bad in (float("nan"), -1, "25", None):  # NaN would turn the latency judgement off
        with pytest.raises(ValueError, match="min_latency_increase_ms"):
            router_mod.Policy.from_dict({"min_latency_increase_ms": bad})
