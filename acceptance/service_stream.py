"""Checks for contracts/service.yaml's stream and kill-switch criteria (AC-SVC-004, 005).

Every check talks HTTP to a live training service that trains the real core, and
accounts for what it received against what the run itself wrote: ``metrics.jsonl``
(one line per step, step 0 the initial evaluation), ``checkpoints/`` and ``status.json``
in the service's evidence folder. The expected event list is built from those files,
never from the service's own ``events.jsonl``, so a service that numbers, drops or
repeats events cannot agree with itself.

- ``stream_and_reconnect`` (shared service): a run's SSE stream over two connections,
  the first dropped after some events (abruptly under the ``drop_sse`` fault), the
  second resumed with ``Last-Event-ID``; then a fresh connection replays the run.
- ``keepalive_while_quiet`` (a service of its own with a short ``--sse-ping``): one
  connection from before the run's first event to its end, with the trainer paused
  for a while (a long step): the stream must stay alive with keep-alive comments and
  still deliver every event in order (also under the ``slow_trainer`` fault).
- ``delete_stops_at_checkpoint`` (shared service): ``DELETE`` while the trainer is
  held mid-step; the run ends ``cancelled`` at the next step boundary with a
  verifying checkpoint of its last step.
- ``sigterm_stops_at_checkpoint`` (a service of its own): SIGTERM to the service while
  its trainer is held mid-step; it must refuse new runs, wait for the step and its
  checkpoint, exit 0; a service restarted on the same folder lists the run, intact.

A check's own service gets its run as soon as it listens, without waiting for
``/readyz`` (which waits for the inference engine, which training does not use): the
training process starts while the service loads it, and the check costs less.

Pausing the trainer (SIGSTOP, then SIGCONT) stands for a long step: the micro models
step in milliseconds, and a pause makes "while the step runs" a window the check can
act in, the same on a busy machine and a fast one. Thresholds live in the YAML.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from acceptance.service_client import (
    TERMINAL,
    client,
    start_run,
    start_service,
    wait_for,
    wait_status,
)
from harness.context import CheckContext
from kernels.service.runs import complete_lines, read_json

# ---------------------------------------------------------------- an SSE connection


class SSEConnection:
    """``GET /api/events/training?run_id=...`` over a socket of its own, read line by line.

    ``next()`` returns the next item as it arrives: an event ``{"kind": "event", "id",
    "event", "data", "ok", "t"}`` (``ok``: it had an integer id, a type and JSON data)
    or a comment ``{"kind": "comment", "t"}``; ``t`` is the arrival time
    (``time.monotonic()``); ``None`` once the server has closed the stream. An event
    is taken only when its blank line has arrived, as a browser's EventSource does.
    ``drop()`` resets the socket (RST, like a client that vanished)."""

    def __init__(
        self, base_url: str, run_id: str, last_event_id: int | None = None, timeout: float = 30
    ) -> None:
        parts = urlsplit(base_url)
        host = parts.hostname or "127.0.0.1"
        self.conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        headers = {"accept": "text/event-stream"}
        if last_event_id is not None:
            headers["last-event-id"] = str(last_event_id)
        self.opened = time.monotonic()
        self.conn.request("GET", f"/api/events/training?run_id={run_id}", headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.content_type = self.resp.getheader("content-type", "")
        self.sock = self.conn.sock
        self.closed_by_server = False
        self._fields: dict[str, str] = {}

    def next(self) -> dict[str, Any] | None:
        if self.status != 200:
            return None
        while True:
            raw = self.resp.readline()
            if not raw:
                self.closed_by_server = True
                return None
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.startswith(":"):
                return {"kind": "comment", "t": time.monotonic()}
            if line:
                key, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                self._fields[key] = self._fields.get(key, "") + value if key == "data" else value
                continue
            if self._fields:
                fields, self._fields = self._fields, {}
                return event_of(fields, time.monotonic())

    def items(self, deadline: float) -> Iterator[dict[str, Any]]:
        """Items until the server closes the stream or ``deadline`` (monotonic) passes."""
        while time.monotonic() < deadline:
            item = self.next()
            if item is None:
                return
            yield item

    def close(self) -> None:
        """A client that leaves politely: FIN."""
        with contextlib.suppress(OSError):
            self.resp.close()
        self.conn.close()

    def drop(self) -> bool:
        """A client that vanishes: RST (SO_LINGER 0, then close). True once the socket
        is closed."""
        sock = self.sock
        if sock is None:
            return False
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()
        with contextlib.suppress(OSError):
            sock.close()
        return sock.fileno() == -1


def event_of(fields: dict[str, str], t: float) -> dict[str, Any]:
    ev: dict[str, Any] = {"kind": "event", "t": t, "id": None, "event": fields.get("event"),
                          "data": None, "ok": True}  # fmt: skip
    try:
        ev["id"] = int(fields["id"])
    except (KeyError, ValueError):
        ev["ok"] = False
    try:
        ev["data"] = json.loads(fields["data"])
    except (KeyError, ValueError):
        ev["ok"] = False
    if not ev["event"]:
        ev["ok"] = False
    return ev


# ---------------------------------------------------------------- what the run wrote


def json_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def checkpoint_steps(run: Path) -> dict[int, str]:
    """``{step: name}`` of the complete checkpoints in ``run/checkpoints/``."""
    folder = run / "checkpoints"
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith("ckpt-") and p.name[5:].isdigit():
                found[int(p.name[5:])] = p.name
    return found


def expected_events(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """The events a finished run must have streamed, in order, from its own files: one
    ``step`` per metrics line (its data the line), a ``checkpoint`` after the step it
    saved, and a last ``end`` with the final status."""
    ckpts = checkpoint_steps(run)
    out: list[tuple[str, dict[str, Any]]] = []
    for line in json_lines(run / "metrics.jsonl"):
        out.append(("step", line))
        step = int(line.get("step", -1))
        if step > 0 and step in ckpts:
            name = ckpts[step]
            out.append(("checkpoint", {"step": step, "name": name, "path": f"checkpoints/{name}"}))
    st = read_json(run / "status.json")
    end = {k: st.get(k) for k in ("status", "step", "stopped_by", "weights_sha256")}
    if st.get("status") == "failed":
        end = {"status": "failed", "error": st.get("error")}
    out.append(("end", end))
    return out


def account(
    connections: list[list[dict[str, Any]]], expected: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """The events received over ``connections`` (in order) against ``expected``; id N
    is the N-th expected event."""
    events = [e for conn in connections for e in conn if e["kind"] == "event"]
    ids = [e["id"] for e in events if e["ok"]]
    seen: dict[int, int] = {}
    mismatched = 0
    for e in events:
        if not e["ok"]:
            continue
        seen[e["id"]] = seen.get(e["id"], 0) + 1
        n = e["id"]
        if not 1 <= n <= len(expected) or expected[n - 1] != (e["event"], e["data"]):
            mismatched += 1
    contents = [json.dumps([e["event"], e["data"]], sort_keys=True) for e in events if e["ok"]]
    return {
        "events_expected": len(expected),
        "events_received": len(events),
        "unparseable": sum(1 for e in events if not e["ok"]),
        "first_id": ids[0] if ids else -1,
        "ids_strictly_increasing": all(a < b for a, b in zip(ids, ids[1:], strict=False)),
        "lost": sum(1 for n in range(1, len(expected) + 1) if n not in seen),
        "repeated": sum(c - 1 for c in seen.values()) + len(contents) - len(set(contents)),
        "mismatched": mismatched,
        "ended": events[-1]["data"].get("status", "") if events and events[-1]["ok"]
        and events[-1]["event"] == "end" else "",
    }  # fmt: skip


def timeline(connections: list[list[dict[str, Any]]], t0: float) -> list[list[Any]]:
    """What each connection received, for the evidence: [connection, t, kind, id, event]."""
    return [
        [i, round(x["t"] - t0, 3), x["kind"], x.get("id"), x.get("event")]
        for i, conn in enumerate(connections)
        for x in conn
    ]


# ---------------------------------------------------------------- the trainer process


def trainer_pid(run: Path, timeout: float) -> int:
    """The pid of the run's training process (``status.json``, written once it runs)."""
    return int(wait_for(lambda: read_json(run / "status.json").get("pid"), timeout,
                        f"the training process of {run.name}"))  # fmt: skip


def process_state(pid: int) -> str:
    """The state letter of ``pid`` (``T``: stopped), or ``""`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return process_state(pid) not in ("", "Z", "X")


@contextlib.contextmanager
def held(pid: int) -> Iterator[None]:
    """The trainer stopped (SIGSTOP) for the block, then continued: a long step."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: process_state(pid) in ("T", "t", ""), 5, f"SIGSTOP of {pid}", 0.005)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def checkpoint_report(run: Path) -> dict[str, Any]:
    """The run's last checkpoint in ``checkpoints/``: its step, whether it loads with
    every digest verifying (weights, optimizer, trainer state at that step), its
    weights' sha256; and the last step in ``metrics.jsonl``."""
    from kernels import checkpoint as ck

    ckpts = checkpoint_steps(run)
    out: dict[str, Any] = {"final_checkpoint_step": max(ckpts, default=-1),
                           "checkpoint_verifies": False, "checkpoint_sha256": ""}  # fmt: skip
    if ckpts:
        path = run / "checkpoints" / ckpts[max(ckpts)]
        try:
            loaded = ck.load_checkpoint(path, with_state=True)
            trainer_step = int((loaded.trainer or {}).get("step", -1))
            optimizer_step = int(loaded.optimizer["step"]) if loaded.optimizer else -1
            verified = ck.verify_digests(path)  # every file of the folder, digests.json's list
            same_step = loaded.step == trainer_step == optimizer_step == max(ckpts)
            out["checkpoint_verifies"] = verified is not None and same_step
            out["checkpoint_sha256"] = hashlib.sha256(
                (path / "model.safetensors").read_bytes()
            ).hexdigest()
        except (ck.CheckpointError, OSError, KeyError, ValueError) as exc:
            out["checkpoint_error"] = " ".join(str(exc).split())[:300]
    metrics = json_lines(run / "metrics.jsonl")
    out["last_metrics_step"] = max((int(m.get("step", -1)) for m in metrics), default=-1)
    out["steps_after_checkpoint"] = out["last_metrics_step"] - out["final_checkpoint_step"]
    return out


def last_step(run: Path) -> int:
    return max((int(m.get("step", -1)) for m in json_lines(run / "metrics.jsonl")), default=-1)


# ---------------------------------------------------------------- AC-SVC-004: the stream


def stream_and_reconnect(ctx: CheckContext) -> dict[str, Any]:
    """A real run's events over two connections: the first ends after ``first_events``
    events (dropped abruptly under a ``drop_sse`` fault), the second resumes with
    ``Last-Event-ID``; after the end a fresh connection replays the whole run. The
    events within ``window_s`` are counted from the first one (before it the training
    process starts: numba compiles on a cold cache). params: run (the POST body),
    first_events, window_s, timeout_s."""
    url = ctx.service("training")
    runs = ctx.service_dir("training") / "training"
    timeout = float(ctx.params.get("timeout_s", 60))
    window = float(ctx.params.get("window_s", 10))
    first_n = int(ctx.params.get("first_events", 8))
    with client(url) as http:
        run_id = start_run(http, ctx.params["run"])
        deadline = time.monotonic() + timeout
        # a micro run can end within one poll of the stream: the trainer is held once it
        # has written more than the first events (a fault reads into the next one), so
        # the drop happens while the run is training
        pid = trainer_pid(runs / run_id, timeout)
        wait_for(lambda: len(json_lines(runs / run_id / "metrics.jsonl")) >= first_n + 2,
                 timeout, f"the first {first_n + 2} steps of {run_id}", 0.002)  # fmt: skip
        with held(pid):
            first = SSEConnection(url, run_id)
            t0 = first.opened
            got: list[dict[str, Any]] = []
            for item in first.items(deadline):
                got.append(item)
                if sum(1 for x in got if x["kind"] == "event") == first_n:
                    break
            last_id = max((x["id"] for x in got if x["kind"] == "event" and x["ok"]), default=0)
            if ctx.fault is not None:
                ctx.fault.inject(stream=first)  # reads part of the next event, then RST
            else:
                first.close()
            status = http.get(f"/api/training/runs/{run_id}").json()["status"]
            running = status not in TERMINAL
        second = SSEConnection(url, run_id, last_event_id=last_id)
        rest = list(second.items(deadline))
        wait_status(http, run_id, lambda st: st["status"] in TERMINAL, timeout)
        replay_conn = SSEConnection(url, run_id)
        replay = list(replay_conn.items(deadline))
    connections = [got, rest]
    expected = expected_events(runs / run_id)
    obs = account(connections, expected)
    received = [(e["id"], e["event"], e["data"]) for c in connections for e in c
                if e["kind"] == "event" and e["ok"]]  # fmt: skip
    replayed = [(e["id"], e["event"], e["data"]) for e in replay if e["kind"] == "event"]
    second_ids = [e["id"] for e in rest if e["kind"] == "event" and e["ok"]]
    arrivals = sorted(e["t"] for c in connections for e in c if e["kind"] == "event")
    t1 = arrivals[0] if arrivals else t0  # the run's first event: its process has started
    obs.update(
        stream_status=first.status,
        content_type=first.content_type,
        first_event_s=round(t1 - t0, 3),
        events_in_window=sum(1 for t in arrivals if t - t1 <= window),
        dropped_after=last_id,
        dropped_mid_run=running,
        reconnect_contiguous=bool(second_ids) and second_ids[0] == last_id + 1,
        replay_matches=replayed == received,
        closed_after_end=second.closed_by_server and replay_conn.closed_by_server,
    )
    ctx.attach_json("sse-timeline.json", {"run_id": run_id, "timeline": timeline(
        [got, rest, replay], t0)})  # fmt: skip
    return obs


def keepalive_while_quiet(ctx: CheckContext) -> dict[str, Any]:
    """A service of this check's own with ``--sse-ping ping_s``; one connection from
    right after the POST to the end of the run, the trainer held for ``pause_s`` after
    ``pause_after`` events (a ``slow_trainer`` fault then throttles the rest of the
    run). Observes the longest silence of the connection, the keep-alives within the
    longest quiet stretch between events, and the events against the run's files.
    params: run, ping_s, pause_after, pause_s, timeout_s."""
    timeout = float(ctx.params.get("timeout_s", 60))
    ping = float(ctx.params.get("ping_s", 0.5))
    pause_after = int(ctx.params.get("pause_after", 5))
    pause_s = float(ctx.params.get("pause_s", 2.5))
    evidence = ctx.scratch / "service"
    svc = start_service(evidence, ctx.scratch / "service.log", ready=False,
                        env={"KERNELS_AUDIT_LOG": str(ctx.scratch / "audit.jsonl")},
                        args=("--sse-ping", str(ping), "--shutdown-timeout", "20"))  # fmt: skip
    pause = Pause(ctx, pause_s)
    try:
        with client(svc.url) as http:
            run_id = start_run(http, ctx.params["run"])
        run = evidence / "training" / run_id
        deadline = time.monotonic() + timeout
        conn = SSEConnection(svc.url, run_id, timeout=timeout)
        pause.stop_at(run, pause_after, timeout)
        t0 = conn.opened
        got: list[dict[str, Any]] = []
        events = 0
        for item in conn.items(deadline):
            got.append(item)
            if item["kind"] == "event":
                events += 1
                pause.received(events)
    finally:
        pause.end()
        code = svc.stop(timeout=30)
    times = [x["t"] for x in got]
    gaps = [b - a for a, b in zip([t0, *times], times, strict=False)]
    ev_times = [t0, *(x["t"] for x in got if x["kind"] == "event")]
    quiet, quiet_from = 0.0, t0
    for a, b in zip(ev_times, ev_times[1:], strict=False):
        if b - a > quiet:
            quiet, quiet_from = b - a, a
    in_quiet = sum(1 for x in got if x["kind"] == "comment"
                   and quiet_from < x["t"] < quiet_from + quiet)  # fmt: skip
    obs = account([got], expected_events(run))
    obs.update(
        stream_status=conn.status,
        max_silence_s=round(max(gaps, default=0.0), 3),
        quiet_s=round(quiet, 3),
        keepalives_in_quiet=in_quiet,
        keepalives=sum(1 for x in got if x["kind"] == "comment"),
        closed_after_end=conn.closed_by_server,
        service_exit=code,
        hold_error=pause.error,  # why the trainer was not held or throttled, if it was not
    )
    ctx.attach_json("sse-timeline.json", {"run_id": run_id, "timeline": timeline([got], t0)})
    return obs


class Pause:
    """The trainer held (SIGSTOP) as it writes its ``after``-th event (a watcher of its
    ``events.jsonl``), and for ``seconds`` from when the connection has delivered every
    event written before the hold, then continued; then the check's fault, if any, is
    injected into it (``slow_trainer``: the rest of the run throttled). Held at the
    trainer, not at the reader: events the trainer wrote while the reader lagged would
    arrive in the hold and shorten the quiet stretch the check must see (a hold started
    at the reader's 5th event left 0.94 s of a 1.2 s hold quiet on a loaded machine).
    A timer resumes it: a stream that stalls must not stall this."""

    def __init__(self, ctx: CheckContext, seconds: float) -> None:
        self.ctx, self.seconds = ctx, seconds
        self.pid = 0
        self.written = 0  # events in the file once the trainer was held
        self.seen = 0  # events the reader has
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.done = threading.Event()
        self.watcher: threading.Thread | None = None
        self.timer: threading.Timer | None = None
        self.throttle: Any = None
        self.error = ""

    def stop_at(self, run: Path, after: int, timeout: float) -> None:
        def watch() -> None:
            pid = 0
            deadline = time.monotonic() + timeout
            try:
                while not self.done.is_set() and time.monotonic() < deadline:
                    pid = pid or int(read_json(run / "status.json").get("pid") or 0)
                    if pid and len(complete_lines(run / "events.jsonl")) >= after:
                        os.kill(pid, signal.SIGSTOP)
                        self.pid = pid
                        self.written = len(complete_lines(run / "events.jsonl"))
                        self.held.set()
                        self.received(self.seen)  # the reader may have them all already
                        return
                    time.sleep(0.002)
                self.error = f"the trainer was not held: no {after} events in {timeout:g} s"
            except Exception as exc:  # noqa: BLE001 - reported; quiet_s then shows no hold
                self.error = f"the trainer was not held: {exc}"

        self.watcher = threading.Thread(target=watch, daemon=True)
        self.watcher.start()

    def received(self, events: int) -> None:
        """The reader has ``events``: the hold's time starts once it has all written
        before the hold."""
        with self.lock:
            self.seen = max(self.seen, events)
            if self.timer is None and self.held.is_set() and self.seen >= self.written:
                self.timer = threading.Timer(self.seconds, self.resume)
                self.timer.start()

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        if self.ctx.fault is not None:
            try:
                self.throttle = self.ctx.fault.inject(pid=self.pid)
            except Exception as exc:  # InjectionFailed is recorded on the injector
                self.error = str(exc)

    def end(self) -> None:
        self.done.set()
        if self.watcher is not None:
            self.watcher.join()
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        if self.throttle is not None:
            self.throttle.stop()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


# ---------------------------------------------------------------- AC-SVC-005: kill switch


def delete_stops_at_checkpoint(ctx: CheckContext) -> dict[str, Any]:
    """DELETE a running run while its trainer is held mid-step (the stop request is
    then pending in the step); the run must end at the next step boundary with a final
    checkpoint of its last step. params: run, min_step, timeout_s."""
    url = ctx.service("training")
    runs = ctx.service_dir("training") / "training"
    timeout = float(ctx.params.get("timeout_s", 60))
    min_step = int(ctx.params.get("min_step", 5))
    with client(url) as http:
        run_id = start_run(http, ctx.params["run"])
        run = runs / run_id
        wait_status(http, run_id, lambda st: st["step"] >= min_step, timeout)
        pid = trainer_pid(run, timeout)
        with held(pid):
            step_at_delete = last_step(run)
            t0 = time.monotonic()
            r = http.delete(f"/api/training/runs/{run_id}")
        st = wait_status(http, run_id, lambda s: s["status"] in TERMINAL, timeout)
        stop_s = time.monotonic() - t0
        again = http.delete(f"/api/training/runs/{run_id}").status_code
        replay = list(SSEConnection(url, run_id).items(time.monotonic() + timeout))
    ckpt = checkpoint_report(run)
    events = [e for e in replay if e["kind"] == "event" and e["ok"]]
    end = events[-1]["data"] if events and events[-1]["event"] == "end" else {}
    final = ckpt["final_checkpoint_step"]
    return {
        "delete_status": r.status_code,
        "delete_again_status": again,
        "status": st["status"],
        "stopped_by": st.get("stopped_by") or "",
        "stop_s": round(stop_s, 3),
        "step_at_delete": step_at_delete,
        "steps_after_delete": final - step_at_delete,
        **ckpt,
        "api_step_is_checkpoint": st["step"] == final,
        "latest_is_final": (run / "latest").is_file()
        and (run / "latest").read_text().strip() == f"ckpt-{final:06d}",
        "end_event_matches": end.get("status") == "cancelled" and end.get("step") == final,
        "final_checkpoint_event": any(
            e["event"] == "checkpoint" and e["data"].get("step") == final for e in events
        ),
    }


def sigterm_stops_at_checkpoint(ctx: CheckContext) -> dict[str, Any]:
    """SIGTERM to a service of this check's own while its trainer is held mid-step: new
    runs must be refused while the service waits for the step and its checkpoint; the
    service exits 0; one restarted on the same folder lists the run, its checkpoint
    intact. The trainer is held for ``hold_s`` after the signal, or until the service
    exits (a service that does not wait for its runs exits with the trainer held).
    params: run, min_step, hold_s, settle_s, post_every_s, exit_timeout_s, timeout_s."""
    timeout = float(ctx.params.get("timeout_s", 60))
    min_step = int(ctx.params.get("min_step", 5))
    hold_s = float(ctx.params.get("hold_s", 2.0))
    settle_s = float(ctx.params.get("settle_s", 0.2))
    post_every = float(ctx.params.get("post_every_s", 0.05))
    evidence = ctx.scratch / "service"
    env = {"KERNELS_AUDIT_LOG": str(ctx.scratch / "audit.jsonl")}
    shutdown = str(ctx.params.get("shutdown_timeout_s", 30))
    phases: dict[str, float] = {}
    start = time.monotonic()
    svc = start_service(evidence, ctx.scratch / "service.log", env=env, ready=False,
                        args=("--shutdown-timeout", shutdown))  # fmt: skip
    phases["ready"] = time.monotonic() - start
    posts: list[dict[str, Any]] = []
    try:
        with client(svc.url) as http:
            run_id = start_run(http, ctx.params["run"])
            wait_status(http, run_id, lambda st: st["step"] >= min_step, timeout)
        run = evidence / "training" / run_id
        pid = trainer_pid(run, timeout)
        phases["running"] = time.monotonic() - start
        with held(pid):
            step_at_signal = last_step(run)
            t0 = time.monotonic()
            svc.proc.send_signal(signal.SIGTERM)
            time.sleep(settle_s)
            while time.monotonic() - t0 < hold_s and svc.proc.poll() is None:
                posts.append({"t": round(time.monotonic() - t0, 3),
                              "outcome": post_outcome(svc.url, ctx.params["run"]),
                              "service_alive": svc.proc.poll() is None})  # fmt: skip
                time.sleep(post_every)
            alive_while_held = svc.proc.poll() is None
            trainer_held_at_exit = not alive_while_held and alive(pid)
        resumed = time.monotonic()
        try:
            code = svc.proc.wait(timeout=float(ctx.params.get("exit_timeout_s", 60)))
        except Exception:
            code = -999
        exited = time.monotonic()
        trainer_alive_at_exit = trainer_held_at_exit or alive(pid)
        at_exit = read_json(run / "status.json")
        ckpt = checkpoint_report(run)
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait()
    with contextlib.suppress(Exception):  # an orphaned trainer (a mutant) may still run
        wait_for(lambda: not alive(pid), 30, f"trainer {pid}")
    phases["stopped"] = time.monotonic() - start
    restarted = start_service(evidence, ctx.scratch / "restarted.log", env=env, ready=False)
    try:
        with client(restarted.url) as http:
            listed = {r["run_id"]: r for r in http.get("/api/training/runs").json()["runs"]}
    finally:
        restart_code = restarted.stop(timeout=30)
    phases["restarted"] = time.monotonic() - start
    after = checkpoint_report(run)
    mine = listed.get(run_id, {})
    final = ckpt["final_checkpoint_step"]
    accepted = [p for p in posts if p["outcome"] == "201"]
    refused = [p for p in posts if p["outcome"] in ("refused", "503")]
    ctx.attach_json("sigterm.json", {"posts": posts, "phases_s": phases})
    return {
        "exit_code": code,
        "exit_s": round(exited - t0, 3),
        "exit_after_resume_s": round(exited - resumed, 3),
        "alive_while_held": alive_while_held,
        "posts_after_signal": len(posts),
        "accepted_after_signal": len(accepted),
        "refused_while_finishing": sum(1 for p in refused if p["service_alive"]),
        "trainer_alive_at_exit": trainer_alive_at_exit,
        "status_at_exit": at_exit.get("status", ""),
        "stopped_by_at_exit": at_exit.get("stopped_by") or "",
        "step_at_signal": step_at_signal,
        "steps_after_signal": final - step_at_signal,
        **ckpt,
        "restart_lists_run": run_id in listed,
        "restart_status": mine.get("status", ""),
        "restart_step_is_checkpoint": mine.get("step") == final,
        "restart_checkpoint_intact": after["checkpoint_verifies"]
        and after["checkpoint_sha256"] == ckpt["checkpoint_sha256"] != "",
        "restart_exit_code": restart_code,
    }


def post_outcome(url: str, body: dict[str, Any]) -> str:
    """A POST of a new run on a connection of its own: its status code, or ``refused``
    when the connection is refused or cut."""
    try:
        r = httpx.post(f"{url}/api/training/runs", json=body, timeout=5)
    except httpx.TransportError:
        return "refused"
    return str(r.status_code)
