"""Checks for contracts/service.yaml's rollout criteria: generation latency under load
(AC-SVC-006), a canary rollout with automatic rollback (AC-SVC-007), and a killed
service that restarts and resumes its run to the same bytes (AC-SVC-008).

``generation_latency`` talks to the shared ``training`` service (``ctx.service``): it
trains a micro model there, then times ``POST /api/generate`` from one client and from
N concurrent ones. The yardstick is measured in the same check, interleaved with the
requests: the core's own generation (``kernels.infer.generate`` with the KV cache, on
the same checkpoint, in this process). So the SLO says "the service costs at most k
times the work it wraps", which holds on a busy machine, plus an absolute ceiling.

``canary_rollout`` starts three service processes of its own (the current model, a
good candidate, a regressed one), trains in the first and copies the run to the others,
and drives client threads through ``kernels.service.router.CanaryRouter`` while the
router's controller shifts traffic step by step. It observes who answered every request
(the ``run_id`` in each backend's own answer, never the router's word), before and
after each decision, whether the retired process is gone, and the audit events.

``restart_resume`` starts its own service, starts a run, SIGKILLs the service mid-run
(``ctx.fault`` when a fault falsifier runs), watches what the orphaned trainer does,
restarts the service on the same evidence folder and resumes the run through the API;
the final weights are compared with an uninterrupted run of the same config.

Everything is real (HTTP on loopback to ``harness core serve`` processes training the
core) and TINY; thresholds live in the YAML.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from acceptance.service_client import (
    TERMINAL,
    ServiceProcess,
    client,
    start_run,
    start_service,
    wait_for,
    wait_status,
)
from acceptance.training import config_from
from harness.context import CheckContext

VOLATILE_METRICS = ("tokens_per_s",)  # wall-clock derived: never compared


# ---------------------------------------------------------------- shared pieces


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def train_body(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /api/training/runs`` body of ``params.train``."""
    return dict(params["train"])


def trained_run(http: httpx.Client, body: Mapping[str, Any], timeout: float) -> str:
    """A run trained to the end through the API; its run_id."""
    run_id = start_run(http, body)
    st = wait_status(http, run_id, lambda s: s["status"] in TERMINAL, timeout)
    if st["status"] != "succeeded":
        raise RuntimeError(f"training run {run_id} ended {st['status']}: {st.get('error')}")
    return run_id


def load_core_generator(ckpt: Path) -> tuple[Any, Any]:
    """The core's own generation from ``ckpt`` (no service code): (generate(prompt,
    max_new) -> text, the model's n_ctx)."""
    import numpy as np

    from kernels.checkpoint import load_checkpoint
    from kernels.data.tokenizer import ByteBPE
    from kernels.infer import generate
    from kernels.serving import model_from_checkpoint, prompt_ids

    loaded = load_checkpoint(ckpt)
    model, _ = model_from_checkpoint(loaded)
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
    tok = ByteBPE.from_json(loaded.tokenizer_json)
    n_ctx = model.config.n_ctx

    def run(prompt: str, max_new: int) -> str:
        ids = prompt_ids(tok, prompt, n_ctx)
        new = max(0, min(max_new, n_ctx - len(ids)))
        out = generate(model, params, ids, new, use_cache=True)
        return str(tok.decode(np.asarray(out)).decode("utf-8", errors="replace"))

    return run, n_ctx


def attach_log(ctx: CheckContext, svc: ServiceProcess | None, name: str) -> None:
    if svc is not None and svc.log.is_file():
        with contextlib.suppress(OSError):
            ctx.attach(svc.log, name)


# ---------------------------------------------------------------- AC-SVC-006 latency


def generation_latency(ctx: CheckContext) -> dict[str, Any]:
    """Time ``POST /api/generate``: one client, each request right after the core's own
    generation of the same prompt (the same-run yardstick: their ratio, pair by pair),
    then ``clients`` concurrent clients of ``requests_per_client`` requests each. Each
    phase ends after ``time_bound_s``: a request still unanswered then is an error, and
    counts as taking the bound in the p95. Then the yardstick again. Every answer is also
    compared with the core's text."""
    p = ctx.params
    url = ctx.service("training")
    timeout = float(p.get("request_timeout_s", 30))
    t_start = time.monotonic()
    phases: dict[str, float] = {}  # seconds since the start, in the evidence
    http = client(url, timeout=timeout)
    run_id = trained_run(http, train_body(p), float(p.get("run_timeout_s", 120)))
    ckpts = ctx.service_dir("training") / "training" / run_id / "checkpoints"
    ckpt = sorted(ckpts.iterdir())[-1]
    core, _ = load_core_generator(ckpt)
    prompts = [str(s) for s in p["prompts"]]
    max_new = int(p["max_new_tokens"])
    expected = {pr: core(pr, max_new) for pr in prompts}
    phases["trained"] = round(time.monotonic() - t_start, 3)

    def ask(h: httpx.Client, prompt: str, limit: float = timeout) -> tuple[int, float, str | None]:
        body = {"run_id": run_id, "prompt": prompt, "max_new_tokens": max_new}
        t0 = time.perf_counter()
        r = h.post("/api/generate", json=body, timeout=limit)
        dt = time.perf_counter() - t0
        text = r.json().get("text") if r.status_code == 200 else None
        return r.status_code, dt, text

    def timed_core(prompt: str) -> float:
        t0 = time.perf_counter()
        core(prompt, max_new)
        return time.perf_counter() - t0

    wrong: list[dict[str, Any]] = []
    bound = float(p["time_bound_s"])
    for i in range(int(p.get("warmup", 1))):  # the first request loads the model
        pr = prompts[i % len(prompts)]
        ask(http, pr)
        timed_core(pr)
    core_s: list[float] = []
    single_s: list[float] = []
    pair_ratios: list[float] = []
    single_errors = 0
    deadline = time.perf_counter() + bound  # this phase is bounded too
    for i in range(int(p["baseline_pairs"])):
        if time.perf_counter() > deadline:
            break
        pr = prompts[i % len(prompts)]
        c = timed_core(pr)
        try:
            status, dt, text = ask(http, pr, max(0.1, deadline - time.perf_counter()))
        except httpx.HTTPError:
            status, dt, text = 599, bound, None
        core_s.append(c)
        single_errors += status != 200
        if status == 200:
            single_s.append(dt)
            pair_ratios.append(dt / c)
        if text is not None and text != expected[pr]:
            wrong.append({"prompt": pr, "service": text, "core": expected[pr]})

    phases["single client"] = round(time.monotonic() - t_start, 3)
    clients = int(p["clients"])
    per_client = int(p["requests_per_client"])
    results: list[list[tuple[int, float, str | None, str]]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def load_client(i: int) -> None:
        with client(url, timeout=timeout) as h:
            h.get("/healthz")  # the connection is open before the clock starts
            start.wait()
            deadline = time.perf_counter() + bound
            for k in range(per_client):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                pr = prompts[(i + k) % len(prompts)]
                try:  # an answer after the bound is not waited for: it counts as an error
                    status, dt, text = ask(h, pr, left)
                except httpx.HTTPError:
                    status, dt, text = 599, bound, None
                results[i].append((status, dt, text, pr))

    threads = [threading.Thread(target=load_client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    phases["load"] = round(time.monotonic() - t_start, 3)
    for i in range(int(p["baseline_pairs"]) // 2):  # the yardstick after the load, too
        core_s.append(timed_core(prompts[i % len(prompts)]))

    load = [r for rs in results for r in rs]
    load_ok = [dt for status, dt, _, _ in load if status == 200]
    # a request not answered within the bound took at least the bound (censored)
    load_all = [dt if status == 200 else max(dt, bound) for status, dt, _, _ in load]
    for status, _, text, pr in load:
        if status == 200 and text != expected[pr]:
            wrong.append({"prompt": pr, "service": text, "core": expected[pr]})
    core_median = statistics.median(core_s)
    single_median = statistics.median(single_s) if single_s else math.nan
    p95 = percentile(load_all, 95)
    obs = {
        "clients": clients,
        "load_requests_sent": len(load),
        "load_requests_ok": len(load_ok),
        "load_errors": len(load) - len(load_ok),
        "single_pairs": len(pair_ratios),
        "single_errors": single_errors,
        "load_wall_s": round(wall, 3),
        "core_median_ms": round(core_median * 1e3, 3),
        "single_median_ms": round(single_median * 1e3, 3),
        "load_median_ms": round(statistics.median(load_ok) * 1e3, 3) if load_ok else math.nan,
        "load_p95_ms": round(p95 * 1e3, 3),
        "single_over_core": round(statistics.median(pair_ratios), 3) if pair_ratios else math.nan,
        "load_p95_over_core": round(p95 / core_median, 3),
        "load_p95_over_single_median": round(p95 / single_median, 3),
        "answers_differing_from_core": len(wrong),
    }
    ctx.attach_json("latency.json", {
        **obs, "phases": phases, "run_id": run_id, "checkpoint": ckpt.name, "core_s": core_s,
        "single_s": single_s, "load_s": load_ok, "wrong_answers": wrong[:5],
    })  # fmt: skip
    return obs


# ---------------------------------------------------------------- AC-SVC-007 canary


def deploy_run(trained: Path, evidence: Path, run_id: str, cfg: Any) -> Path:
    """The checkpoints of a run trained here, deployed as run ``run_id`` of a service's
    evidence folder (the layout docs/service.md gives: ``config.json``, ``status.json``,
    ``checkpoints/ckpt-NNNNNN/``), where the service serves them like its own."""
    dest = evidence / "training" / run_id
    (dest / "checkpoints").mkdir(parents=True)
    for ckpt in sorted(trained.glob("ckpt-*")):
        shutil.copytree(ckpt, dest / "checkpoints" / ckpt.name)
    now = time.time()
    config = {"run_id": run_id, "created_at": now, "request": {"deployed_from": str(trained)},
              "train_config": cfg.to_dict()}  # fmt: skip
    (dest / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    status = {"status": "succeeded", "finished_at": now}
    (dest / "status.json").write_text(json.dumps(status, indent=1, sort_keys=True) + "\n")
    return dest


def corrupt_weights(path: Path, count: int) -> dict[str, Any]:
    """Flip ``count`` bytes of a safetensors file's tensor data (past its header): a
    regressed candidate whose weights no longer match their digest."""
    import struct

    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start = 8 + n
    step = max(1, (len(data) - start) // (count + 1))
    offsets = [start + step * (i + 1) for i in range(count)]
    for off in offsets:
        data[off] ^= 0xFF
    path.write_bytes(bytes(data))
    return {"path": path.name, "offsets": offsets}


def answered_by(routed: Any) -> str | None:
    """The run whose checkpoint answered: the backend's own ``run_id`` (None for an
    error: no backend served an answer)."""
    if routed.status == 200 and isinstance(routed.body, dict):
        return str(routed.body.get("run_id"))
    return None


def drive_rollout(
    router: Any, policy: Any, params: Mapping[str, Any], candidate_run: str, expected_after: str
) -> dict[str, Any]:
    """Client threads send sessions of ``session_length`` requests through ``router``
    while its controller rolls out; after the decision each client sends
    ``requests_after_decision`` more, then every session seen comes back once (users
    return). Observes the decision, the traffic each step saw and who answered
    afterwards (``expected_after``: the run that should answer everything)."""
    prompts = [str(s) for s in params["prompts"]]
    body = {"max_new_tokens": int(params["max_new_tokens"])}
    clients = int(params["clients"])
    length = int(params["session_length"])
    after = int(params["requests_after_decision"])
    log: list[tuple[float, str, Any]] = []  # (sent at, session, routed)
    revisits: list[tuple[float, str, Any]] = []  # after the decision, every session once more
    sessions: list[str] = []
    lock = threading.Lock()
    decided = threading.Event()
    errors: list[str] = []

    def client_loop(i: int) -> None:
        sent_after, j, mine = 0, 0, []
        try:
            while sent_after < after:
                session = f"client{i}-session{j}"
                mine.append(session)
                for k in range(length):
                    sent = time.monotonic()
                    prompt = prompts[(i + j + k) % len(prompts)]
                    routed = router.forward({**body, "prompt": prompt}, session)
                    with lock:
                        log.append((sent, session, routed))
                    if decided.is_set() or router.decided_at is not None:
                        sent_after += 1
                j += 1
            for session in mine:  # the users come back, each in the session it had
                sent = time.monotonic()
                routed = router.forward({**body, "prompt": prompts[i % len(prompts)]}, session)
                with lock:
                    revisits.append((sent, session, routed))
                    sessions.append(session)
        except Exception as exc:  # reported, never a hang
            errors.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        result = router.rollout(policy)
    finally:
        decided.set()
        for t in threads:
            t.join(60)
    if errors:
        raise RuntimeError("; ".join(errors))
    decided_at = result.decided_at if result.decided_at is not None else math.inf
    after_log = [(s, r) for t, s, r in log if t >= decided_at] + [(s, r) for _, s, r in revisits]
    not_expected = [
        {"session": s, "status": r.status, "answered_by": answered_by(r), "routed_to": r.backend}
        for s, r in after_log
        if answered_by(r) != expected_after
    ]
    # the weights split new sessions: who answered each session's first request, by step
    first: dict[str, Any] = {}
    for _, session, routed in sorted(log, key=lambda entry: entry[0]):
        first.setdefault(session, routed)
    shares = []
    for n, verdict in enumerate(result.steps, start=1):
        answers = [answered_by(r) for r in first.values() if r.step == n and r.status == 200]
        shares.append({"weight": verdict["weight"], "new_sessions": len(answers),
                       "candidate": answers.count(candidate_run)})  # fmt: skip
    return {
        "promoted": result.promoted,
        "reason": result.reason,
        "steps": result.steps,
        "new_session_shares": shares,
        "requests_before_decision": sum(1 for t, _, _ in log if t < decided_at),
        "requests_after_decision": len(after_log),
        "not_expected_after_decision": not_expected,
        "sessions": len(sessions),
        "client_errors_before_decision": sum(
            1 for t, _, r in log if t < decided_at and r.status != 200
        ),
    }


def canary_rollout(ctx: CheckContext) -> dict[str, Any]:
    """Roll out a good candidate (promoted to 100 %, the old model retired) and then a
    regressed one (its weights corrupted: rolled back, retired) through the router, with
    three service processes of the check's own."""
    from auditchain import read_events, verify_chain
    from kernels.checkpoint import checkpoint_name, weights_digest
    from kernels.service import router as router_mod
    from kernels.train import train

    p = ctx.params
    ckpts = {k: checkpoint_name(int(v)) for k, v in p["checkpoints"].items()}
    audit = Path(os.environ.get("KERNELS_AUDIT_LOG") or ctx.scratch / "lifecycle-audit.jsonl")
    names = ("current", "candidate", "regressed")
    procs: dict[str, ServiceProcess] = {}
    t0 = time.monotonic()
    phases: dict[str, float] = {}  # seconds since the start, in the evidence

    def mark(name: str) -> None:
        phases[name] = round(time.monotonic() - t0, 3)

    try:
        for name in names:  # all three start at once; readiness is awaited below
            procs[name] = start_service(ctx.scratch / name, ctx.scratch / f"{name}.log",
                                        ready=False)  # fmt: skip
        # meanwhile the models: one run of the core trainer, three of its checkpoints
        cfg = config_from(p["train"])
        trained = ctx.scratch / "trained"
        train(cfg, trained)
        runs = {name: deploy_run(trained, ctx.scratch / name, f"canary-{name}", cfg)
                for name in names}  # fmt: skip
        corrupted = corrupt_weights(
            runs["regressed"] / "checkpoints" / ckpts["regressed"] / "model.safetensors",
            int(p.get("corrupt_bytes", 16)),
        )
        mark("trained and deployed")
        for name in names:
            svc = procs[name]
            wait_for(lambda svc=svc: ready(svc), float(p.get("start_timeout_s", 60)),
                     f"{name} service readiness")  # fmt: skip
        mark("services ready")

        def backend(name: str) -> Any:
            ckpt = ckpts[name]
            return router_mod.Backend(
                url=procs[name].url, run_id=f"canary-{name}", checkpoint=ckpt,
                weights_sha256=weights_digest(runs[name] / "checkpoints" / ckpt),
                on_retire=lambda: procs[name].stop(timeout=30),
            )  # fmt: skip

        cur, good, regressed = backend("current"), backend("candidate"), backend("regressed")
        warm = [threading.Thread(target=warm_up, args=(b,)) for b in (cur, good, regressed)]
        for t in warm:  # each backend answers once before it takes traffic (loads its model)
            t.start()
        for t in warm:
            t.join()
        mark("warmed")
        policy = router_mod.Policy.from_dict(p["policy"])
        events_before = len(read_events(audit))

        first = router_mod.CanaryRouter(cur, good, audit_log=str(audit))
        promoted = drive_rollout(first, policy, p, good.run_id, expected_after=good.run_id)
        first.close()
        mark("promotion")
        old_current_exit = procs["current"].proc.poll()
        # the model now served: the good one, or (it was refused, and this check fails on
        # good_promoted) the old current model, so the rollback is still observed
        served = good if promoted["promoted"] else cur
        second = router_mod.CanaryRouter(served, regressed, audit_log=str(audit))
        # the regressed candidate must not answer once rolled back: expected is the served one
        rolled = drive_rollout(second, policy, p, regressed.run_id, expected_after=served.run_id)
        second.close()
        mark("rollback")
        regressed_exit = procs["regressed"].proc.poll()  # None: still running
        regressed_reachable = reachable(procs["regressed"].url)
        _, _, problems = verify_chain(audit, missing_ok=True)
        events = [e for e in read_events(audit)[events_before:]
                  if str(e.get("event", "")).startswith(("canary.", "model.serve"))]  # fmt: skip
    finally:
        for name, svc in procs.items():
            svc.stop(timeout=30)
            attach_log(ctx, svc, f"{name}-service.log")
        mark("stopped")
    ctx.attach_json("rollouts.json", {"phases": phases, "promotion": promoted, "rollback": rolled,
                                      "corrupted": corrupted, "audit_events": events})  # fmt: skip
    return {
        **rollout_observations("good", promoted, policy),
        "good_decision": promoted["reason"],
        "regressed_decision": rolled["reason"],
        **rollout_observations("regressed", rolled, policy),
        "good_split_off_by_sessions": split_off_by(promoted),
        "good_old_model_stopped_cleanly": old_current_exit == 0,
        "regressed_stopped_cleanly": regressed_exit == 0,
        "regressed_reachable_after_rollback": regressed_reachable,
        **audit_observations(events, cur, good, regressed),
        "audit_chain_problems": len(problems),
    }


def warm_up(b: Any) -> None:
    body = {"run_id": b.run_id, "checkpoint": b.checkpoint, "prompt": "\n", "max_new_tokens": 2}
    httpx.post(f"{b.url}/api/generate", timeout=30, json=body)


def ready(svc: ServiceProcess) -> bool:
    if svc.proc.poll() is not None:
        raise RuntimeError(f"a service exited ({svc.proc.returncode}): {svc.log_tail()}")
    try:
        return httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def reachable(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def rollout_observations(prefix: str, obs: Mapping[str, Any], policy: Any) -> dict[str, Any]:
    return {
        f"{prefix}_promoted": obs["promoted"],
        f"{prefix}_steps_judged": len(obs["steps"]),
        f"{prefix}_decided_at_weight": obs["steps"][-1]["weight"] if obs["steps"] else None,
        f"{prefix}_requests_before_decision": obs["requests_before_decision"],
        f"{prefix}_failed_before_decision": obs["client_errors_before_decision"],
        f"{prefix}_requests_after_decision": obs["requests_after_decision"],
        f"{prefix}_after_decision_not_expected": len(obs["not_expected_after_decision"]),
        f"{prefix}_sessions": obs["sessions"],
    }


def split_off_by(obs: Mapping[str, Any]) -> float:
    """How far the candidate's count of the sessions each step started is from the
    step's weight times their number, at worst (a smooth split is off by less than one
    session; a step that started none has nothing to show: infinity)."""
    off = [abs(s["candidate"] - s["weight"] * s["new_sessions"]) if s["new_sessions"] else math.inf
           for s in obs["new_session_shares"]]  # fmt: skip
    return round(max(off, default=math.inf), 3)


def audit_observations(
    events: Sequence[Mapping[str, Any]], cur: Any, good: Any, regressed: Any
) -> dict[str, Any]:
    """The two decisions as the audit log has them."""

    def data(e: Mapping[str, Any]) -> Mapping[str, Any]:
        inner = e.get("data")
        return inner if isinstance(inner, Mapping) else e

    decisions = [data(e) for e in events if e.get("event") == "canary.decision"]
    rollbacks = [data(e) for e in events if e.get("event") == "canary.rollback"]
    serves = [data(e) for e in events if e.get("event") == "model.serve"]
    return {
        "audit_decisions": len(decisions),
        "audit_decisions_accepted": sum(1 for d in decisions if d.get("accepted") is True),
        "audit_rollbacks": len(rollbacks),
        "audit_rollback_names_models": any(
            r.get("current_sha256") == good.weights_sha256
            and r.get("candidate_sha256") == regressed.weights_sha256
            for r in rollbacks
        ),
        "audit_serves_promoted": any(
            s.get("weights_sha256") == good.weights_sha256 for s in serves
        ),  # fmt: skip
    }


# ---------------------------------------------------------------- AC-SVC-008 restart


class Background:
    """``fn()`` in a thread; ``result()`` waits for it and raises what it raised."""

    def __init__(self, fn: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, args=(fn,), daemon=True)
        self.thread.start()

    def run(self, fn: Any) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # handed to the caller of result()
            self.error = exc

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"not done within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.value


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited: reaped here when it was re-parented to this process
    (the harness's worker is a subreaper), else no longer running (or a zombie)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def file_states(run: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file the trainer or the child writes (not status.json,
    which a restarted service may update)."""
    return {
        str(f.relative_to(run)): (f.stat().st_size, f.stat().st_mtime_ns)
        for f in sorted(run.rglob("*"))
        if f.is_file() and f.name != "status.json"
    }


def stable(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in line.items() if k not in VOLATILE_METRICS} for line in lines]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def restart_resume(ctx: CheckContext) -> dict[str, Any]:
    """SIGKILL the service mid-run, watch the orphaned trainer, restart the service on
    the same evidence folder, resume the run through the API, and compare the final
    weights with an uninterrupted run of the same config."""
    from kernels.checkpoint import latest_checkpoint, sha256_file
    from kernels.train import TrainConfig, train

    p = ctx.params
    evidence = ctx.scratch / "evidence"
    timeout = float(p.get("run_timeout_s", 120))
    kill_after = int(ctx.fault.step if ctx.fault is not None and ctx.fault.step >= 0
                     else p["kill_after_step"])  # fmt: skip
    first = second = None
    t0 = time.monotonic()
    phases: dict[str, float] = {}  # seconds since the start, in the evidence

    def mark(name: str) -> None:
        phases[name] = round(time.monotonic() - t0, 3)

    try:
        first = start_service(evidence, ctx.scratch / "first.log")
        mark("service ready")
        http = client(first.url)
        run_id = start_run(http, train_body(p))
        run = evidence / "training" / run_id
        # the uninterrupted run of the same config (the service's own, from config.json),
        # trained here meanwhile, in a thread
        cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train_config"])
        reference = ctx.scratch / "reference"
        uninterrupted = Background(lambda: train(cfg, reference))
        st = wait_status(http, run_id, lambda s: s["step"] >= kill_after or s["status"] in TERMINAL,
                         timeout)  # fmt: skip
        mark("kill")
        killed_at = int(st["step"])
        status_at_kill = st["status"]
        pid = int(json.loads((run / "status.json").read_text())["pid"])
        t_kill = time.monotonic()
        if ctx.fault is not None:
            ctx.fault.inject(process=first.proc, at=f"step {killed_at}")
        else:
            first.proc.send_signal(signal.SIGKILL)
        first_exit = first.proc.wait(timeout=30)
        at_kill = read_jsonl(run / "metrics.jsonl")
        step_at_kill = int(at_kill[-1]["step"]) if at_kill else 0
        # what the trainer does now that its service is gone
        second = start_service(evidence, ctx.scratch / "second.log", ready=False)
        orphan_stopped = True
        try:
            wait_for(lambda: process_gone(pid), float(p["orphan_stop_timeout_s"]),
                     "the orphaned trainer")  # fmt: skip
        except TimeoutError:
            orphan_stopped = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        orphan_stop_s = time.monotonic() - t_kill
        mark("orphan gone")
        states = file_states(run)
        metrics_at_stop = read_jsonl(run / "metrics.jsonl")
        last_step = int(metrics_at_stop[-1]["step"]) if metrics_at_stop else 0
        latest = latest_checkpoint(run)
        ckpt_step = int(latest.name.split("-")[-1]) if latest is not None else 0
        wait_for(lambda: ready(second), float(p.get("start_timeout_s", 60)), "restarted service")
        mark("restarted")
        http2 = client(second.url)
        listed = {r["run_id"]: r for r in http2.get("/api/training/runs").json()["runs"]}
        listed_status = listed.get(run_id, {}).get("status")
        writes_after_stop = sum(1 for k, v in file_states(run).items() if states.get(k) != v)
        before_resume = {line["process"] for line in read_jsonl(run / "resources.jsonl")}
        r = http2.post(f"/api/training/runs/{run_id}/resume")
        resume_code = r.status_code
        again = http2.post(f"/api/training/runs/{run_id}/resume").status_code
        final = wait_status(http2, run_id, lambda s: s["status"] in TERMINAL, timeout)
        mark("resumed run ended")
        uninterrupted.result(timeout)
        mark("reference trained")
        api_metrics = http2.get(f"/api/training/runs/{run_id}/metrics").json()["metrics"]
    finally:
        for svc in (first, second):
            if svc is not None:
                svc.stop(timeout=30)
        attach_log(ctx, first, "first-service.log")
        attach_log(ctx, second, "second-service.log")
    resumed = [line for line in read_jsonl(run / "resources.jsonl")
               if line["process"] not in before_resume]  # fmt: skip
    resumed_from = int(resumed[0]["from_step"]) if resumed else -1

    def digest(root: Path, name: str) -> str:
        latest = latest_checkpoint(root)
        return sha256_file(latest / name) if latest is not None else ""

    obs = {
        "killed_after_step": killed_at,
        "step_at_kill": step_at_kill,
        "status_at_kill": status_at_kill,
        "kill_signal_delivered": first_exit == -signal.SIGKILL,
        "orphan_stopped": orphan_stopped,
        "orphan_stop_s": round(orphan_stop_s, 3),
        "orphan_steps_after_kill": last_step - step_at_kill,
        "orphan_stopped_at_checkpoint": latest is not None and ckpt_step == last_step,
        "writes_after_orphan_stopped": writes_after_stop,
        "listed_after_restart": run_id in listed,
        "status_after_restart": listed_status,
        "resume_status_code": resume_code,
        "second_resume_status_code": again,
        "final_status": final["status"],
        "checkpoint_step_before_resume": ckpt_step,
        "resumed_from_step": resumed_from,
        "resumed_from_latest_checkpoint": resumed_from == ckpt_step and ckpt_step > 0,
        "weights_identical": digest(run, "model.safetensors") != ""
        and digest(run, "model.safetensors") == digest(reference, "model.safetensors"),
        "optimizer_identical": digest(run, "optimizer.safetensors") != ""
        and digest(run, "optimizer.safetensors") == digest(reference, "optimizer.safetensors"),
        "metrics_match_uninterrupted": stable(api_metrics)
        == stable(read_jsonl(reference / "metrics.jsonl")),
    }
    ctx.attach_json(
        "restart.json",
        {
            **obs,
            "phases": phases,
            "run_id": run_id,
            "resources": read_jsonl(run / "resources.jsonl"),
            "status": json.loads((run / "status.json").read_text()),
        },
    )
    return obs
