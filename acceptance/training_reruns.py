"""Checks for contracts/training.yaml that rerun or interrupt training (AC-TRAIN-001,
AC-TRAIN-002, AC-TRAIN-007): a rerun in a fresh process gives byte-identical
checkpoints with true provenance, a run SIGKILLed after a step or inside a checkpoint
write resumes to the same bytes, and every process of a preempted run records its
usage.

Like acceptance/training.py, every check trains TINY models of the real core
(``kernels.train``) on the real shipped corpus, in ``ctx.scratch``, and observes;
thresholds live in the YAML. The reruns and preempted processes are training child
processes (acceptance/training_child.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acceptance.training import checkpoint_dirs, config_from, run_seed
from acceptance.training_child import Child
from harness.context import CheckContext

WRITE_FILES = ("model.safetensors", "optimizer.safetensors", "trainer.json", "latest")
VOLATILE_METRICS = ("tokens_per_s",)  # wall-clock derived: never compared


# ---------------------------------------------------------------- comparing runs


def file_digests(run: Path) -> dict[str, str]:
    """sha256 of every file of every checkpoint of a run, by relative path."""
    from kernels.checkpoint import sha256_file

    return {
        f"{d.name}/{f.name}": sha256_file(f)
        for d in checkpoint_dirs(run)
        for f in sorted(d.iterdir())
        if f.is_file()
    }


def stable_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock fields (the rest must reproduce exactly)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out.append({k: v for k, v in rec.items() if k not in VOLATILE_METRICS})
    return out


def final_digest(run: Path, name: str = "model.safetensors") -> str:
    from kernels.checkpoint import CheckpointError, latest_checkpoint, sha256_file

    try:
        latest = latest_checkpoint(run)
    except CheckpointError:
        return ""
    if latest is None or not (latest / name).is_file():
        return ""
    return sha256_file(latest / name)


def weights_difference(a: Path, b: Path) -> dict[str, Any]:
    """Where two runs' final weights files differ: tensor names, values, stamps."""
    import numpy as np

    from kernels.checkpoint import CheckpointError, read_safetensors, resolve_model_file

    try:
        ta, sa = read_safetensors(resolve_model_file(a))
        tb, sb = read_safetensors(resolve_model_file(b))
    except CheckpointError as exc:
        return {"unreadable": str(exc)[:200]}
    return {
        "tensors_differing": sorted(
            n
            for n in set(ta) | set(tb)
            if n not in ta or n not in tb or not np.array_equal(ta[n], tb[n])
        )[:5],
        "stamps_differing": sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)),
    }


def require_same_code(*runs: Path) -> None:
    """Raise (the check could not observe: ERROR, never FAIL) when the runs' final weights
    were stamped with different code (``code_version``: git commit and dirty flag, or
    ``source_sha256``): the code changed under the check (an edit or a commit during the
    run), so the runs did not have the same inputs."""
    from kernels.checkpoint import CheckpointError, read_stamps

    identities = set()
    for run in runs:
        with contextlib.suppress(CheckpointError):
            stamps = read_stamps(run)
            identities.add((stamps.get("code_version"), stamps.get("source_sha256")))
    if len(identities) > 1:
        raise RuntimeError(
            "the code changed while the check ran (code_version or source_sha256 differ "
            f"between runs: {sorted(map(str, identities))}); rerun on a quiet checkout"
        )


# ---------------------------------------------------------------- AC-TRAIN-001


def required_provenance(prov: Mapping[str, Any]) -> list[str]:
    """The provenance fields a rerun needs that are missing or empty."""
    need = (
        "code_version",
        "source_sha256",
        "dependencies",
        "dependency_sha256",
        "datasets",
        "train_config",
        "seed",
        "environment",
    )
    missing = [k for k in need if prov.get(k) in (None, "", {}, [], "unknown")]
    env = prov.get("environment") or {}
    missing += [f"environment.{k}" for k in ("python", "platform", "threads") if not env.get(k)]
    return missing


def git_head(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def kernels_source_digest(root: Path) -> str:
    """sha256 over kernels/**/*.py (relative path, then bytes), recomputed here."""
    base = root / "kernels"
    h = hashlib.sha256()
    for path in sorted(base.rglob("*.py")):
        h.update(str(path.relative_to(base)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def provenance_observations(ctx: CheckContext, run: Path, cfg: Any) -> dict[str, Any]:
    """Each provenance field, compared with its recomputation from the real thing."""
    from importlib import metadata

    from kernels.checkpoint import read_stamps, sha256_bytes, sha256_file
    from kernels.data.manifest import dataset_path

    prov = json.loads((run / "provenance.json").read_text())
    missing = required_provenance(prov)
    head = git_head(ctx.root)
    deps = prov.get("dependencies") or {}

    def installed(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    datasets = prov.get("datasets") or []
    digests_ok = bool(datasets) and all(
        sha256_file(dataset_path(d["name"], verify=False)) == d.get("sha256") for d in datasets
    )
    env = prov.get("environment") or {}
    stamps = read_stamps(run)
    return {
        "provenance_missing": len(missing),
        "provenance_missing_fields": missing,
        "code_commit_matches": bool(head) and str(prov.get("code_version", "")).startswith(head),
        "source_digest_matches": prov.get("source_sha256") == kernels_source_digest(ctx.root),
        "dependency_digest_matches": bool(deps)
        and prov.get("dependency_sha256") == sha256_bytes(json.dumps(deps, sort_keys=True).encode())
        and all(installed(d) == v for d, v in deps.items()),
        "datasets_recorded": len(datasets),
        "dataset_digests_match": digests_ok,
        "hyperparameters_match": prov.get("train_config") == cfg.to_dict(),
        "seed_matches": prov.get("seed") == cfg.seed,
        "environment_matches": env.get("python") == sys.version.split()[0]
        and env.get("threads") == cfg.threads,
        "stamps_match_provenance": stamps.get("code_version") == prov.get("code_version")
        and json.loads(stamps.get("datasets", "null")) == datasets
        and json.loads(stamps.get("train_config", "null")) == cfg.to_dict(),
    }


def reproducible_training(ctx: CheckContext) -> dict[str, Any]:
    """Train twice with the same inputs (here, and in a fresh process): every checkpoint
    file is byte-identical, and provenance.json records code, dependencies, dataset
    digests, hyperparameters, seed and environment, each equal to its recomputation."""
    from kernels.train import train

    cfg = config_from(ctx.params, seed=run_seed(ctx))
    head_before = git_head(ctx.root)
    here, fresh = ctx.scratch / "run-here", ctx.scratch / "run-fresh"
    train(cfg, here)
    child = Child(ctx, fresh, cfg, "rerun")
    code = child.finish(float(ctx.params.get("child_timeout", 300)))
    if code != 0:
        raise RuntimeError(f"the rerun exited {code}: {child.tail()}")
    require_same_code(here, fresh)
    a, b = file_digests(here), file_digests(fresh)
    weights_a, weights_b = final_digest(here), final_digest(fresh)
    obs: dict[str, Any] = {
        "family": cfg.family,
        "seed": cfg.seed,
        "checkpoints": len(checkpoint_dirs(here)),
        "weights_sha256": weights_a[:16],
        "rerun_weights_sha256": weights_b[:16],
        "weights_identical": bool(weights_a) and weights_a == weights_b,
        "checkpoint_files_identical": bool(a) and a == b,
        "files_differing": sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:6],
        "metrics_identical": stable_metrics(here / "metrics.jsonl")
        == stable_metrics(fresh / "metrics.jsonl"),
        "weights_difference": {} if weights_a == weights_b else weights_difference(here, fresh),
        "provenance_identical": (here / "provenance.json").read_text()
        == (fresh / "provenance.json").read_text(),
    }
    obs.update(provenance_observations(ctx, here, cfg))
    if git_head(ctx.root) != head_before:
        raise RuntimeError("a commit landed while the check ran; rerun on a quiet checkout")
    ctx.attach(here / "provenance.json", "provenance.json")
    return obs


# ---------------------------------------------------------------- AC-TRAIN-002


def kill_plan(ctx: CheckContext, cfg: Any) -> list[dict[str, Any]]:
    """Two preemptions: SIGKILL after a step, and SIGKILL inside a checkpoint write.

    Under a ``sigkill`` fault one of them is the injector's (``params.during``:
    ``step``, the default, or ``checkpoint_write``; at ``ctx.fault.step``); the
    other is drawn from ``ctx.rng`` so that at least one resume starts from a
    real checkpoint. Sorted in the order the training reaches them.
    """
    every, steps = cfg.ckpt_every, cfg.steps

    def ckpt_at_or_after(step: int) -> int:
        return min(steps, max(every, math.ceil(step / every) * every))

    lo, hi = ctx.params.get("kill_between", [every, steps - 1])
    step_kill = {"at": "step", "step": ctx.rng.randint(int(lo), int(hi)), "by": "check"}
    wlo, whi = ctx.params.get("write_kill_between", [2 * every, steps])
    write_kill = {
        "at": "checkpoint_write",
        "step": ckpt_at_or_after(ctx.rng.randint(wlo, whi)),
        "file": ctx.params.get("write_kill_file", "optimizer.safetensors"),
        "by": "check",
    }
    fault = ctx.fault
    if fault is not None:
        during = fault.params.get("during", "step")
        if during == "checkpoint_write":
            files = list(fault.params.get("files", WRITE_FILES))
            write_kill = {
                "at": "checkpoint_write",
                "step": ckpt_at_or_after(int(fault.step)),
                "file": fault.rng.choice(files),
                "by": "fault",
            }
        else:
            step_kill = {
                "at": "step",
                "step": min(max(int(fault.step), 1), steps - 1),
                "by": "fault",
            }
    kills = [step_kill, write_kill]
    return sorted(kills, key=lambda k: (k["step"], 0 if k["at"] == "checkpoint_write" else 1))


def latest_loadable(run: Path) -> tuple[bool, int]:
    """(the latest checkpoint, if any, loads with its full state and digests; its step)."""
    from kernels.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

    try:
        latest = latest_checkpoint(run)
        if latest is None:
            return True, 0
        loaded = load_checkpoint(latest, with_state=True)
    except CheckpointError:
        return False, -1
    complete = loaded.optimizer is not None and loaded.trainer is not None
    return complete, loaded.step


def resource_observations(run: Path, last: Child, steps: int, resumed_from: int) -> dict[str, Any]:
    """The surviving process's usage record, checked against what the OS measured."""
    from kernels.train import read_metrics

    path = run / "resources.jsonl"
    records = read_metrics(path) if path.is_file() else []
    final = records[-1] if records else {}
    keys = ("wall_s", "cpu_s", "peak_rss_mb")
    recorded = all(isinstance(final.get(k), (int, float)) and final[k] > 0 for k in keys) and (
        final.get("from_step") == resumed_from and final.get("to_step") == steps
    )
    # what the process recorded against what the OS measured for it (wait4's rusage):
    # at most that (it stops counting before exit), and at least half of it (the
    # interpreter's start-up and exit are all it may miss)
    plausible = recorded and (
        0.5 * last.cpu <= final["cpu_s"] <= last.cpu + 0.05
        and final["wall_s"] <= last.wall + 0.05
        and 0.5 * last.maxrss_mb <= final["peak_rss_mb"] <= last.maxrss_mb * 1.05 + 1.0
    )
    return {
        "resources_recorded": recorded,
        "resources_plausible": plausible,
        "resource_records": len(records),
        "final_usage": {k: round(float(final.get(k, 0.0)), 3) for k in keys},
        "os_measured": {
            "wall_s": round(last.wall, 3),
            "cpu_s": round(last.cpu, 3),
            "peak_rss_mb": round(last.maxrss_mb, 1),
        },
    }


def preemption_resume(ctx: CheckContext) -> dict[str, Any]:
    """SIGKILL the training process after a random step and inside a checkpoint write,
    resume each time from ``latest``: the final weights and optimizer state are
    byte-identical to an uninterrupted run, the metrics rewind instead of duplicating,
    and the surviving process records its CPU seconds, wall time and peak memory."""
    from kernels.train import train

    cfg = config_from(ctx.params, seed=run_seed(ctx))
    timeout = float(ctx.params.get("child_timeout", 300))
    reference, run = ctx.scratch / "reference", ctx.scratch / "preempted"
    train(cfg, reference)
    kills = kill_plan(ctx, cfg)
    delivered, loadable, resumed_from = 0, 0, []
    children: list[Child] = []
    for i, kill in enumerate([*kills, None]):
        _, start_step = latest_loadable(run)
        resumed_from.append(max(start_step, 0))
        pause = None if kill is None else {k: v for k, v in kill.items() if k != "by"}
        child = Child(ctx, run, cfg, f"segment-{i}", pause=pause)
        children.append(child)
        if kill is None:
            break
        if not child.wait_paused(timeout):
            kill["reached"] = False
            kill["exit"] = child.finish(timeout)
            kill["log"] = child.tail(200)
            continue
        kill["reached"] = True
        if kill["by"] == "fault" and ctx.fault is not None:
            ctx.fault.inject(process=child.proc, at=f"{kill['at']} {kill['step']}")
            child.account()
            kill["exit"] = child.proc.returncode
        else:
            child.proc.send_signal(signal.SIGKILL)
            kill["exit"] = child.finish(timeout)
        delivered += kill["exit"] == -signal.SIGKILL
        ok, _ = latest_loadable(run)
        loadable += ok
    last = children[-1]
    code = last.finish(timeout)
    obs: dict[str, Any] = {
        "kills": kills,
        "kills_delivered": delivered,
        "kills_leaving_loadable_latest": loadable,
        "resumed_from": resumed_from,
        "resumes_from_checkpoint": sum(1 for s in resumed_from[1:] if s > 0),
        "completed": code == 0,
        "final_exit": code,
        "weights_identical": bool(final_digest(reference))
        and final_digest(run) == final_digest(reference),
        "optimizer_identical": bool(final_digest(reference, "optimizer.safetensors"))
        and final_digest(run, "optimizer.safetensors")
        == final_digest(reference, "optimizer.safetensors"),
        "metrics_match_uninterrupted": stable_metrics(run / "metrics.jsonl")
        == stable_metrics(reference / "metrics.jsonl"),
    }
    if code != 0:
        obs["final_log"] = last.tail()
    if not obs["weights_identical"]:
        require_same_code(run, reference)
        obs["weights_difference"] = weights_difference(run, reference)
    obs.update(resource_observations(run, last, cfg.steps, resumed_from[-1]))
    for name in ("metrics.jsonl", "resources.jsonl"):
        if (run / name).is_file():
            ctx.attach(run / name, f"preempted-{name}")
    return obs


def preempted_usage_recorded(ctx: CheckContext) -> dict[str, Any]:
    """Every process that trained, the SIGKILLed one included, has its CPU seconds, wall
    time and peak memory in resources.jsonl: compares the records with the processes
    started and with the CPU time the OS measured for them."""
    from kernels.train import read_metrics

    cfg = config_from(ctx.params, seed=run_seed(ctx))
    timeout = float(ctx.params.get("child_timeout", 300))
    run = ctx.scratch / "run"
    kill_at = int(ctx.params["kill_after_step"])
    first = Child(ctx, run, cfg, "killed", pause={"at": "step", "step": kill_at})
    if not first.wait_paused(timeout):
        raise RuntimeError(f"the first process never reached step {kill_at}: {first.tail()}")
    first.proc.send_signal(signal.SIGKILL)
    killed = first.finish(timeout) == -signal.SIGKILL
    second = Child(ctx, run, cfg, "resumed")
    if second.finish(timeout) != 0:
        raise RuntimeError(f"the resumed process failed: {second.tail()}")
    path = run / "resources.jsonl"
    lines = read_metrics(path) if path.is_file() else []
    # one process may write several cumulative lines (at each checkpoint); its last is its total
    last: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(lines):
        last[str(line.get("process", n))] = line
    records = list(last.values())
    recorded_cpu = sum(float(r.get("cpu_s", 0.0)) for r in records)
    measured_cpu = first.cpu + second.cpu
    if path.is_file():
        ctx.attach(path, "resources.jsonl")
    return {
        "killed": killed,
        "processes": 2,
        "resource_records": len(records),
        "unrecorded_processes": 2 - len(records),
        "recorded_cpu_s": round(recorded_cpu, 3),
        "os_measured_cpu_s": round(measured_cpu, 3),
        "recorded_cpu_fraction": recorded_cpu / measured_cpu if measured_cpu > 0 else 0.0,
    }
