"""A canary router for generation: two service processes, traffic shifted in steps,
each step judged, and automatic rollback.

``CanaryRouter`` stands in front of two ``harness core serve`` processes, the *current*
model and a *candidate* (each a ``Backend``: its URL, and the run and checkpoint it
serves). ``forward(body, session)`` sends one ``POST /api/generate`` to one of them, with
the backend's run and checkpoint filled in, and returns its answer unchanged (status and
body) with the name of the backend that gave it. New sessions are split by the
candidate's weight (a smooth, deterministic split: at 10 % every tenth new session goes
to the candidate); a session then stays on its backend (sticky: a conversation is served
by one model), as long as that backend is in service.

``rollout(policy)`` is the controller: for each step of ``policy.steps`` (e.g. 10 %,
50 %, then 100 %) it sets the candidate's weight, waits until both backends have answered
``min_requests`` requests of that step, and judges the candidate against the current
model on the same window: error rate (any status >= 400, or no answer) and median
latency (slower by more than ``max_latency_ratio`` times and by at least
``min_latency_increase_ms``). A step that fails (or gathers too little traffic within
``step_timeout_s``) rolls back: the candidate leaves the pool (its weight is zero, every
session pinned to it returns to the current model) and its ``on_retire`` is called (e.g.
SIGTERM to its process), so nothing is served by it any more. After the last step the candidate is
promoted and the old current model retired the same way. Each decision is recorded in
the lifecycle audit log (``kernels.lifecycle``): ``canary.decision`` (both backends, their
weights digests, every step's judgement, accepted or not), then ``canary.rollback`` (the
model kept, the one refused, why) or ``model.serve`` (the candidate now served).

Standard library only (``http.client``): the router needs none of the service's web
framework. Traffic comes from the callers of ``forward`` (client threads); ``rollout``
runs in a thread of its own and only watches and decides.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kernels import lifecycle

CURRENT, CANDIDATE = "current", "candidate"
# a keep-alive connection the server had closed: the request is sent again, once
STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass
class Backend:
    """One service process behind the router and the model it serves."""

    url: str  # base URL, e.g. http://127.0.0.1:8765
    run_id: str  # the training run whose checkpoint it serves
    checkpoint: str | None = None  # ckpt-NNNNNN; None: the run's latest
    weights_sha256: str | None = None  # of that checkpoint's weights, for the audit log
    on_retire: Callable[[], Any] | None = None  # take it down (e.g. SIGTERM its process)
    in_service: bool = True

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "run_id": self.run_id, "checkpoint": self.checkpoint,
                "weights_sha256": self.weights_sha256}  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """How a rollout proceeds and what makes a candidate fail a step."""

    steps: tuple[float, ...] = (0.1, 0.5, 1.0)  # the candidate's share; the last is promotion
    min_requests: int = 10  # answered by each backend within a step before it is judged
    step_timeout_s: float = 30.0  # a step that cannot gather them fails
    max_error_rate_increase: float = 0.05  # candidate's error rate minus the current one's
    max_latency_ratio: float = 3.0  # candidate's median latency over the current one's
    # ... and slower by at least this much: a gap of a few milliseconds is a busy host's
    # scheduling, not the candidate (medians of 8 requests of 2-11 ms each, measured on
    # a 2-core machine running 3 busy loops, were up to 4.4 x apart between two copies
    # of one model)
    min_latency_increase_ms: float = 25.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "steps" in known:
            known["steps"] = tuple(float(s) for s in known["steps"])
        policy = cls(**known)
        if not policy.steps or any(not 0 < s <= 1 for s in policy.steps):
            raise ValueError(f"steps must be shares in (0, 1] (got {policy.steps})")
        if list(policy.steps) != sorted(policy.steps):
            raise ValueError(f"steps must not decrease (got {policy.steps})")
        for name in ("max_error_rate_increase", "max_latency_ratio", "min_latency_increase_ms"):
            value = getattr(policy, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"{name} must be a finite number >= 0 (got {value!r})")
        return policy


@dataclass(frozen=True)
class Routed:
    """One forwarded request: who answered, how, how fast (seconds, measured here)."""

    backend: str
    status: int
    body: Any
    latency_s: float
    step: int  # the rollout step it was routed in


@dataclass
class Rollout:
    """What ``rollout`` decided and why."""

    promoted: bool
    reason: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    decided_at: float | None = None  # time.monotonic() of the decision


def latency_stats(samples: Sequence[Routed]) -> dict[str, Any]:
    ok = [s.latency_s for s in samples if s.status < 400]
    errors = sum(1 for s in samples if s.status >= 400)
    return {
        "requests": len(samples),
        "errors": errors,
        "error_rate": errors / len(samples) if samples else 0.0,
        "median_latency_s": statistics.median(ok) if ok else None,
    }


def judge_step(
    weight: float, current: Sequence[Routed], candidate: Sequence[Routed], policy: Policy
) -> dict[str, Any]:
    """The candidate against the current model on one step's window."""
    cur, cand = latency_stats(current), latency_stats(candidate)
    reasons = []
    if cand["requests"] < policy.min_requests or cur["requests"] < policy.min_requests:
        reasons.append(f"too little traffic in {policy.step_timeout_s:g} s (current "
                       f"{cur['requests']}, candidate {cand['requests']}; "
                       f"{policy.min_requests} needed)")  # fmt: skip
    increase = cand["error_rate"] - cur["error_rate"]
    if increase > policy.max_error_rate_increase:
        reasons.append(f"error rate {cand['error_rate']:.3f} vs current {cur['error_rate']:.3f}")
    a, b = cand["median_latency_s"], cur["median_latency_s"]
    ratio = a / b if a is not None and b else None
    if a is None and cand["requests"]:
        reasons.append("no request answered successfully")
    elif (ratio is not None and ratio > policy.max_latency_ratio
          and (a - b) * 1e3 >= policy.min_latency_increase_ms):  # fmt: skip
        reasons.append(f"median latency {a * 1e3:.1f} ms, {ratio:.2f} x current "
                       f"({b * 1e3:.1f} ms)")  # fmt: skip
    return {"weight": weight, "current": cur, "candidate": cand,
            "error_rate_increase": increase, "latency_ratio": ratio,
            "passed": not reasons, "reasons": reasons}  # fmt: skip


class CanaryRouter:
    """Routes generation between a current and a candidate backend; see the module."""

    def __init__(
        self,
        current: Backend,
        candidate: Backend,
        *,
        timeout_s: float = 30.0,
        audit_log: str | None = None,
    ) -> None:
        self.backends = {CURRENT: current, CANDIDATE: candidate}
        self.weights = {CURRENT: 1.0, CANDIDATE: 0.0}
        self.pins: dict[str, str] = {}  # session -> backend name
        self.samples: list[Routed] = []  # answers of the current step
        self.step = 0
        self.credit = 0.0  # the smooth split's running share of the candidate
        self.lock = threading.RLock()
        self.timeout_s = timeout_s
        self.audit_log = audit_log
        self.decided_at: float | None = None  # time.monotonic() of the rollout's decision
        self.local = threading.local()  # one keep-alive connection per thread and backend

    # ------------------------------------------------------------ routing

    def choose(self, session: str | None) -> tuple[str, Backend, int]:
        """The backend for a request: its session's, while that one is in service; else
        one by weight (and the session is pinned to it)."""
        with self.lock:
            name = self.pins.get(session) if session is not None else None
            if name is None or not self.backends[name].in_service:
                name = self.pick()
                if session is not None:
                    self.pins[session] = name
            return name, self.backends[name], self.step

    def pick(self) -> str:
        """A smooth weighted split of new sessions (the caller holds the lock)."""
        live = {n: w for n, w in self.weights.items() if self.backends[n].in_service and w > 0}
        if not live:
            raise RuntimeError("no backend in service")
        if len(live) == 1:
            return next(iter(live))
        self.credit += live[CANDIDATE] / (live[CANDIDATE] + live[CURRENT])
        if self.credit >= 1.0 - 1e-9:
            self.credit -= 1.0
            return CANDIDATE
        return CURRENT

    def connection(self, backend: Backend) -> http.client.HTTPConnection:
        conns = self.local.__dict__.setdefault("conns", {})
        conn = conns.get(backend.url)
        if conn is None:
            parts = urlsplit(backend.url)
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                              timeout=self.timeout_s)  # fmt: skip
            conns[backend.url] = conn
        return conn

    def post(self, backend: Backend, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """POST JSON to a backend: (status, parsed body); 502 when it does not answer."""
        data = json.dumps(body).encode()
        for attempt in range(2):  # a keep-alive connection the server closed: once more
            conn = self.connection(backend)
            try:
                conn.request("POST", path, body=data,
                             headers={"content-type": "application/json"})  # fmt: skip
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self.local.conns.pop(backend.url, None)
                if attempt == 0 and isinstance(exc, STALE_CONNECTION):
                    continue
                return 502, {"title": "Bad gateway", "status": 502,
                             "detail": f"{backend.url}: {type(exc).__name__}: {exc}"}  # fmt: skip
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode("utf-8", errors="replace")
            return resp.status, parsed
        raise AssertionError("unreachable")

    def forward(self, body: Mapping[str, Any], session: str | None = None) -> Routed:
        """``POST /api/generate`` with ``body`` (its run and checkpoint are the backend's)
        on the backend this request is routed to."""
        name, backend, step = self.choose(session)
        payload = {k: v for k, v in body.items() if k not in ("run_id", "checkpoint")}
        payload["run_id"] = backend.run_id
        if backend.checkpoint is not None:
            payload["checkpoint"] = backend.checkpoint
        t0 = time.perf_counter()
        status, answer = self.post(backend, "/api/generate", payload)
        routed = Routed(name, status, answer, time.perf_counter() - t0, step)
        with self.lock:
            if step == self.step:
                self.samples.append(routed)
        return routed

    # ------------------------------------------------------------ control

    def set_weight(self, candidate: float) -> None:
        """The candidate's share of new sessions from now on; a new step's window."""
        with self.lock:
            self.weights = {CURRENT: 1.0 - candidate, CANDIDATE: candidate}
            self.step += 1
            self.samples = []
            self.credit = 0.0

    def window(self) -> tuple[list[Routed], list[Routed]]:
        with self.lock:
            return ([s for s in self.samples if s.backend == CURRENT],
                    [s for s in self.samples if s.backend == CANDIDATE])  # fmt: skip

    def retire(self, name: str) -> Backend:
        """Take a backend out of service: no weight, and its pinned sessions released
        (they go to the other backend from their next request). The caller then calls
        its ``on_retire``."""
        with self.lock:
            backend = self.backends[name]
            backend.in_service = False
            other = CANDIDATE if name == CURRENT else CURRENT
            self.weights = {name: 0.0, other: 1.0}
            self.pins = {s: n for s, n in self.pins.items() if n != name}
            self.step += 1  # a new routing phase: the decision's
            self.samples = []
        return backend

    def rollback(self, result: Rollout) -> None:
        """The candidate failed a step: it leaves the pool, the current model serves all,
        the decision is recorded, and the candidate is taken down."""
        with self.lock:
            result.decided_at = self.decided_at = time.monotonic()
            gone = self.retire(CANDIDATE)
        self.record(result)
        if gone.on_retire is not None:
            gone.on_retire()

    def promote(self, result: Rollout) -> None:
        """The candidate passed every step: it serves all, the decision is recorded, and
        the old current model is taken down."""
        with self.lock:
            result.decided_at = self.decided_at = time.monotonic()
            gone = self.retire(CURRENT)
        self.record(result)
        if gone.on_retire is not None:
            gone.on_retire()

    def rollout(self, policy: Policy, poll_s: float = 0.01) -> Rollout:
        """Shift traffic to the candidate step by step, judging each; roll back at the
        first failed step, promote after the last one."""
        steps: list[dict[str, Any]] = []
        for weight in policy.steps:
            if weight >= 1.0:
                break
            self.set_weight(weight)
            deadline = time.monotonic() + policy.step_timeout_s
            while True:
                cur, cand = self.window()
                if len(cur) >= policy.min_requests and len(cand) >= policy.min_requests:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(poll_s)
            verdict = judge_step(weight, cur, cand, policy)
            steps.append(verdict)
            if not verdict["passed"]:
                result = Rollout(False, f"step {weight:g}: " + "; ".join(verdict["reasons"]),
                                 steps)  # fmt: skip
                self.rollback(result)
                return result
        result = Rollout(True, f"passed {len(steps)} step(s) up to {policy.steps[-2]:g}"
                         if len(policy.steps) > 1 else "promoted", steps)  # fmt: skip
        self.promote(result)
        return result

    # ------------------------------------------------------------ audit

    def record(self, result: Rollout) -> None:
        cur, cand = self.backends[CURRENT], self.backends[CANDIDATE]
        digests = {"current_sha256": cur.weights_sha256, "candidate_sha256": cand.weights_sha256}
        lifecycle.record(
            "canary.decision", self.audit_log, router="kernels.service.router",
            current=cur.describe(), candidate=cand.describe(), accepted=result.promoted,
            reason=result.reason, steps=result.steps, **digests,
        )  # fmt: skip
        if result.promoted:
            lifecycle.record(
                "model.serve", self.audit_log, router="kernels.service.router",
                checkpoint=cand.describe(), weights_sha256=cand.weights_sha256,
            )  # fmt: skip
        else:
            lifecycle.record(
                "canary.rollback", self.audit_log, router="kernels.service.router",
                kept=cur.describe(), refused=cand.describe(), reason=result.reason, **digests,
            )  # fmt: skip

    def close(self) -> None:
        for conn in getattr(self.local, "conns", {}).values():
            conn.close()
