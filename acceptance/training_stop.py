"""Checks for contracts/training.yaml's kill switch (AC-TRAIN-008): SIGTERM stops
training cleanly at a checkpoint boundary, and the generation service refuses new
work while finishing what it accepted.

``stop_and_resume``: the real ``core train`` runs in a child process; during a
random step the check sends SIGTERM, then, to the ``core resume`` that follows,
SIGINT; a last ``core resume`` finishes the run. Each stop must end the process
with the documented status within a bounded time, leaving a complete, verifying
checkpoint of the very step the signal interrupted (``latest`` on it, nothing half
written, no ``result.json``), and the resumed run must end byte-identical to an
uninterrupted one (weights, optimizer, metrics).

``service_stop``: a child process serves a trained checkpoint with
``kernels.serving.GenerationService`` to client threads that keep submitting; the
check sends SIGTERM while requests are queued. Every request accepted before the
stop must complete with the right text, every submission after it must be refused
with ``ServiceStopped``, and none may be lost. The child is this module run as a
script (``python -m acceptance.training_stop serve ...``) with the worker's patches.

Like the other training checks, everything is TINY and real; thresholds live in
the YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acceptance.training import config_from, run_seed
from acceptance.training_child import PATCH_ENV, Child
from acceptance.training_reruns import final_digest, require_same_code, stable_metrics
from harness.context import CheckContext
from harness.falsify import active_patches, apply_patches

# ---------------------------------------------------------------- training: stop, resume


def stop_plan(ctx: CheckContext, cfg: Any) -> list[dict[str, Any]]:
    """The stops, in order: ``params.stops`` = [{signal, between: [lo, hi]}], each at a
    step drawn from ``ctx.rng`` after the previous one (not a periodic checkpoint's
    step, where a checkpoint would exist anyway)."""
    plan, after = [], 0
    for spec in ctx.params.get("stops", [{"signal": "SIGTERM", "between": [2, cfg.steps - 1]}]):
        lo, hi = (int(v) for v in spec["between"])
        steps = [
            s for s in range(max(lo, after + 1), hi + 1) if s % cfg.ckpt_every and s < cfg.steps
        ]
        if not steps:
            raise RuntimeError(f"no step to stop at in {spec['between']} after step {after}")
        step = ctx.rng.choice(steps)
        plan.append({"signal": str(spec["signal"]), "step": step})
        after = step
    return plan


def stop_checkpoint(run: Path, step: int) -> dict[str, Any]:
    """What a stop left in ``run``: the latest checkpoint, whether it verifies (digests,
    weights, optimizer and trainer state) and at which step, and what else is there."""
    from kernels import checkpoint as ck
    from kernels.train import read_metrics

    out: dict[str, Any] = {"latest_step": -1, "verifies": False, "latest_is_signalled": False}
    try:
        latest = ck.latest_checkpoint(run)
        if latest is not None:
            loaded = ck.load_checkpoint(latest, with_state=True)  # verifies every digest
            trainer_step = int((loaded.trainer or {}).get("step", -1))
            optimizer_step = int(loaded.optimizer["step"]) if loaded.optimizer else -1
            out["latest_step"] = loaded.step
            out["verifies"] = (
                loaded.optimizer is not None
                and loaded.trainer is not None
                and trainer_step == loaded.step == optimizer_step
            )
            out["latest_is_signalled"] = latest.name == ck.checkpoint_name(step)
    except ck.CheckpointError as exc:
        out["error"] = str(exc)[:200]
    metrics = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    out["metrics_last_step"] = max((int(r.get("step", -1)) for r in metrics), default=-1)
    out["partial_dirs"] = len(list(run.glob(".ckpt-*.partial")))
    out["result_written"] = (run / "result.json").is_file()
    return out


def stop_and_resume(ctx: CheckContext) -> dict[str, Any]:
    """SIGTERM, then SIGINT, during random steps of ``core train`` / ``core resume``;
    each stop's exit status, time and checkpoint; then the resumed run against an
    uninterrupted one."""
    from kernels.train import train

    cfg = config_from(ctx.params, seed=run_seed(ctx))
    timeout = float(ctx.params.get("child_timeout", 300))
    reference, run = ctx.scratch / "reference", ctx.scratch / "stopped"
    train(cfg, reference)
    plan = stop_plan(ctx, cfg)
    stops: list[dict[str, Any]] = []
    for i, stop in enumerate(plan):
        child = Child(
            ctx, run, cfg, f"segment-{i}", pause={"at": "in_step", "step": stop["step"]},
            cli="train" if i == 0 else "resume",
        )  # fmt: skip
        if not child.wait_paused(timeout):
            code = child.finish(timeout)
            stops.append({**stop, "reached": False, "exit": code, "log": child.tail(300)})
            continue
        t0 = time.monotonic()
        child.proc.send_signal(getattr(signal, stop["signal"]))
        child.ack()
        code = child.finish(timeout)
        stop_s = time.monotonic() - t0
        left = stop_checkpoint(run, stop["step"])
        stops.append({**stop, "reached": True, "exit": code, "stop_s": round(stop_s, 3), **left})
        if code < 0 or left["latest_step"] != stop["step"]:
            stops[-1]["log"] = child.tail(300)
    last = Child(ctx, run, cfg, "segment-last", cli="resume")
    code = last.finish(timeout)
    weights = final_digest(reference)
    optimizer = final_digest(reference, "optimizer.safetensors")
    obs: dict[str, Any] = {
        "stops": stops,
        "stops_requested": len(plan),
        "stops_reached": sum(1 for s in stops if s["reached"]),
        "exit_codes": [s["exit"] for s in stops],
        # of the stops that were reached (an unreached one fails stops_reached instead)
        "max_stop_s": max((s["stop_s"] for s in stops if s["reached"]), default=0.0),
        "stopped_at_signalled_step": sum(1 for s in stops if s.get("latest_is_signalled")),
        "stop_checkpoints_verifying": sum(
            1 for s in stops if s.get("verifies") and s.get("latest_is_signalled")
        ),
        "steps_after_signal": max(
            (s.get("metrics_last_step", -1) - s["step"] for s in stops if s["reached"]),
            default=-1,
        ),
        "partial_checkpoints_left": sum(s.get("partial_dirs", 0) for s in stops),
        "result_written_while_stopped": sum(1 for s in stops if s.get("result_written")),
        "completed": code == 0,
        "final_exit": code,
        "weights_identical": bool(weights) and final_digest(run) == weights,
        "optimizer_identical": bool(optimizer)
        and final_digest(run, "optimizer.safetensors") == optimizer,
        "metrics_match_uninterrupted": stable_metrics(run / "metrics.jsonl")
        == stable_metrics(reference / "metrics.jsonl"),
    }
    if code != 0:
        obs["final_log"] = last.tail()
    if not obs["weights_identical"]:
        require_same_code(run, reference)
    if (run / "metrics.jsonl").is_file():
        ctx.attach(run / "metrics.jsonl", "stopped-metrics.jsonl")
    return obs


# ---------------------------------------------------------------- serving: stop the service


def train_for_serving(ctx: CheckContext) -> Path:
    """A tiny checkpoint (weights and embedded tokenizer) for the service to serve."""
    from kernels.train import train

    fields = dict(ctx.params.get("train", {}))
    cfg = config_from(fields, seed=run_seed(ctx))
    return train(cfg, ctx.scratch / "serve-run").checkpoint


def service_stop(ctx: CheckContext) -> dict[str, Any]:
    """Serve a checkpoint in a child process to client threads that keep submitting;
    SIGTERM while requests are queued; account for every submission."""
    from kernels.serving import generate_from_checkpoint

    ckpt = train_for_serving(ctx)
    prompts = list(ctx.params.get("prompts", ["def ", "import ", "class ", "return "]))
    new_tokens = int(ctx.params.get("new_tokens", 24))
    timeout = float(ctx.params.get("child_timeout", 120))
    report, marker = ctx.scratch / "service-report.json", ctx.scratch / "service.ready"
    settings = {
        "checkpoint": str(ckpt),
        "prompts": prompts,
        "new_tokens": new_tokens,
        "clients": int(ctx.params.get("clients", 4)),
        "budget": int(ctx.params.get("budget_per_client", 400)),
        "interval_s": float(ctx.params.get("interval_s", 0.002)),
        "after_stop": int(ctx.params.get("submissions_after_stop", 5)),
        "queued_before_stop": int(ctx.params.get("queued_before_stop", 4)),
        "workers": int(ctx.params.get("workers", 1)),
        "result_timeout_s": float(ctx.params.get("result_timeout_s", 30)),
        "report": str(report),
        "marker": str(marker),
    }
    env = dict(os.environ)
    env[PATCH_ENV] = json.dumps(active_patches())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ctx.root), env.get("PYTHONPATH", "")) if p)
    log = ctx.scratch / "service.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "acceptance.training_stop", "serve", json.dumps(settings)],
            cwd=ctx.root, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    end = time.monotonic() + timeout
    while not marker.is_file() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.002)
    if not marker.is_file():
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise RuntimeError(f"the service never had requests queued: {log.read_text()[-400:]}")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    stop_s = time.monotonic() - t0
    if not report.is_file():
        raise RuntimeError(f"the service child wrote no report (exit {code}): "
                           f"{log.read_text()[-400:]}")  # fmt: skip
    data = json.loads(report.read_text())
    ctx.attach(report, "service-report.json")
    expected = {p: generate_from_checkpoint(ckpt, p, max_new_tokens=new_tokens) for p in prompts}
    return {**account(data, expected), "exit_code": code, "stop_s": round(stop_s, 3)}


def account(data: Mapping[str, Any], expected: Mapping[str, str]) -> dict[str, Any]:
    """Every submission against the moment the stop was requested (``stopped``: the
    service's monotonic time of the request, shared by the child's clock)."""
    stopped = data.get("stop_requested_at")
    subs = list(data["submissions"])
    if stopped is None:
        stopped = float("inf")  # the signal never reached the service: nothing is "after"
    accepted = [s for s in subs if s["accepted"]]
    refused = [s for s in subs if not s["accepted"]]
    done = [s for s in accepted if s["outcome"] == "completed"]
    return {
        "stop_seen": data.get("stop_requested_at") is not None,
        "submitted": len(subs),
        "accepted": len(accepted),
        "refused": len(refused),
        "completed": len(done),
        "accepted_failed": sum(1 for s in accepted if s["outcome"] == "failed"),
        "lost": sum(1 for s in accepted if s["outcome"] == "lost"),
        "completions_wrong": sum(1 for s in done if s["text"] != expected.get(s["prompt"])),
        # accepted before the stop and still queued (not started) when it came
        "queued_at_stop": sum(1 for s in done if s["started_at"] > stopped),
        "in_flight_at_stop": sum(1 for s in done if s["started_at"] <= stopped < s["finished_at"]),
        "submitted_after_stop": sum(1 for s in subs if s["t_submit"] > stopped),
        "accepted_after_stop": sum(1 for s in accepted if s["t_submit"] > stopped),
        "refused_before_stop": sum(1 for s in refused if s["t_return"] < stopped),
        "refusals_not_service_stopped": sum(1 for s in refused if s["error"] != "ServiceStopped"),
        "drain_s": round(max((s["finished_at"] for s in done), default=stopped) - stopped, 3)
        if done and stopped != float("inf")
        else 0.0,
        "service_stats": data.get("stats", {}),
    }


# ---------------------------------------------------------------- the service child


def serve_main(settings: Mapping[str, Any]) -> int:
    """The service child: serve a checkpoint to client threads that submit every
    ``interval_s`` until ``after_stop`` of their submissions were refused (or their
    budget is spent); tell the parent once requests are queued; on SIGTERM the
    service's own handler stops it. Then report every submission's outcome."""
    from kernels.serving import GenerationService, ServiceStopped

    service = GenerationService.from_checkpoint(
        settings["checkpoint"], workers=int(settings["workers"])
    )
    prompts, new = list(settings["prompts"]), int(settings["new_tokens"])
    service.submit(prompts[0], max_new_tokens=new).result()  # compile and warm
    marker = Path(settings["marker"])
    subs: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        refusals = 0
        for i in range(int(settings["budget"])):
            prompt = prompts[(c + i) % len(prompts)]
            rec: dict[str, Any] = {"client": c, "i": i, "prompt": prompt}
            rec["t_submit"] = time.monotonic()
            try:
                rec["future"] = service.submit(prompt, max_new_tokens=new)
                rec["accepted"], rec["error"] = True, ""
            except ServiceStopped as exc:
                rec["accepted"], rec["error"] = False, type(exc).__name__
                refusals += 1
            except Exception as exc:  # any other refusal is recorded, not hidden
                rec["accepted"], rec["error"] = False, type(exc).__name__
                refusals += 1
            rec["t_return"] = time.monotonic()
            with lock:
                subs.append(rec)
            if refusals >= int(settings["after_stop"]):
                return
            time.sleep(float(settings["interval_s"]))

    def monitor() -> None:
        while not service.stopping:
            if service.pending() >= int(settings["queued_before_stop"]):
                marker.write_text(json.dumps(service.stats()))
                return
            time.sleep(0.001)

    with service.stop_on_signals():
        threads = [threading.Thread(target=client, args=(c,)) for c in range(settings["clients"])]
        threads.append(threading.Thread(target=monitor))
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.05)
        drained = service.stop(timeout=float(settings["result_timeout_s"]))
    # once the workers are gone nothing completes a future any more: waiting is pointless
    deadline = time.monotonic() + (0.0 if drained else float(settings["result_timeout_s"]))
    for rec in subs:
        future = rec.pop("future", None)
        if future is None:
            rec["outcome"] = "refused"
            continue
        try:
            done = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            rec["outcome"] = "lost"
        except Exception as exc:
            rec["outcome"], rec["failure"] = "failed", f"{type(exc).__name__}: {exc}"[:200]
        else:
            rec.update(outcome="completed", text=done.text, started_at=done.started_at,
                       finished_at=done.finished_at)  # fmt: skip
    Path(settings["report"]).write_text(
        json.dumps(
            {
                "stop_requested_at": service.stop_requested_at,
                "stopped_at": service.stopped_at,
                "drained": drained,
                "stats": service.stats(),
                "submissions": subs,
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acceptance.training_stop")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("settings", help="JSON settings (see service_stop)")
    args = parser.parse_args(argv)
    apply_patches(json.loads(os.environ.get(PATCH_ENV, "{}")))
    return serve_main(json.loads(args.settings))


if __name__ == "__main__":
    sys.exit(main())
