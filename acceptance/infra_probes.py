"""Probes of infrastructure this machine does not have: a staging cluster with a
canary controller (AC-INFRA-001), a Slurm GPU pool (AC-INFRA-002) and a Terraform
root module with its cloud account (AC-INFRA-004).

Each probe takes its target from an environment variable (the kube context, the
job id, the module directory), runs the real tool there and hands the tool's
output to a judge below, which turns it into observations of the criterion's
statement (rolled back and the previous revision serving; GPU-seconds on the
requested pool; a plan without errors). The contract's ``expect`` judges those.
Without the tool or the variable the probe SKIPs with the reason.

``params.recorded`` (a directory of a tool's saved output, see
tests/fixtures/infra/) makes the probe judge that output instead of running the
tool: the falsifiers feed it the output of real failures. Only they may: in an
invariant's own params it would turn the SKIP into a verdict on a saved file
(a PASS on a laptop). A check cannot tell that it runs under a mutant (``ctx``
carries the merged params, and ``ctx.fault`` only for fault falsifiers), so
``recorded_refusal`` reads the project's contracts and the probe refuses (an
error, never a verdict) any recording that is not what a mutant falsifier of
this very invariant feeds, or that the invariant's own check params name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.context import CheckContext


def recorded_refusal(root: Path, invariant_id: str, recorded: str) -> str | None:
    """Why ``recorded`` may not stand in for the tool in ``invariant_id``'s check, or
    None: it may only when the project's contracts (``[tool.harness] contracts``)
    have a mutant falsifier of that invariant feeding exactly this recording, and the
    invariant's own check params do not name ``recorded`` at all."""
    from harness.config import load_config
    from harness.loader import load_each

    contracts, _ = load_each(load_config(root).contracts)
    own = [i for k in contracts for i in k.invariants if i.id == invariant_id]
    why = "a recording may only be fed by a falsifier, never decide the check's own run"
    if not own:
        return f"recorded output refused: {invariant_id} is not in the project's contracts ({why})"
    if any("recorded" in i.check.params for i in own):
        return f"recorded output refused: {invariant_id}'s own check params name it ({why})"
    fed = {
        str(f.spec["params"]["recorded"])
        for k in contracts
        for f in k.falsifiers
        if f.target == invariant_id
        and f.kind == "mutant"
        and isinstance(f.spec.get("params"), dict)
        and "recorded" in f.spec["params"]
    }
    if str(recorded) not in fed:
        return (
            f"recorded output refused: no mutant falsifier of {invariant_id} feeds "
            f"{recorded!r} (fed: {sorted(fed)}; {why})"
        )
    return None


def _recorded(ctx: CheckContext) -> Path | None:
    rec = ctx.params.get("recorded")
    if not rec:
        return None
    refused = recorded_refusal(Path(ctx.root), ctx.check_id, str(rec))
    if refused:
        raise PermissionError(refused)
    path = Path(ctx.root) / str(rec)
    if not path.is_dir():
        raise FileNotFoundError(f"recorded output {path} is not a directory")
    return path


def _require(ctx: CheckContext, programs: Sequence[str], env: Sequence[str], reason: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    missing += [f"${v}" for v in env if not os.environ.get(v)]
    if missing:
        ctx.skip(f"{reason}: {', '.join(missing)} not available on this machine")


def _run(argv: Sequence[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    print("$", " ".join(argv), "->", proc.returncode)
    print(proc.stderr[-4000:])
    return proc


# ============================================================ AC-INFRA-001 canary
def _rs_hash(rs: Mapping[str, Any]) -> str:
    return str(rs.get("metadata", {}).get("labels", {}).get("rollouts-pod-template-hash", ""))


def _owned_by(rs: Mapping[str, Any], kind: str, name: str) -> bool:
    refs = rs.get("metadata", {}).get("ownerReferences", [])
    return any(r.get("kind") == kind and r.get("name") == name for r in refs)


def judge_canary_rollback(
    rollout: Mapping[str, Any], replicasets: Mapping[str, Any]
) -> dict[str, Any]:
    """An Argo Rollouts ``Rollout`` (``kubectl get rollout NAME -o json``) and the
    namespace's ReplicaSets (``kubectl get rs -o json``) after a regressed revision
    was rolled out as a canary. Observations: aborted (the controller aborted the
    update), regression_promoted (the new revision became the stable one),
    previous_revision_ready (the stable ReplicaSet has all its pods ready),
    canary_ready_pods, canary_traffic_percent (the canary's traffic weight when
    the rollout routes traffic, else its share of the ready pods), phase."""
    name = str(rollout.get("metadata", {}).get("name", ""))
    spec, status = rollout.get("spec", {}), rollout.get("status", {})
    stable_hash = str(status.get("stableRS", ""))
    canary_hash = str(status.get("currentPodHash", ""))
    owned = [rs for rs in replicasets.get("items", []) if _owned_by(rs, "Rollout", name)]
    by_hash = {_rs_hash(rs): rs for rs in owned}
    stable = by_hash.get(stable_hash, {})
    canary = by_hash.get(canary_hash, {}) if canary_hash != stable_hash else {}
    stable_ready = int(stable.get("status", {}).get("readyReplicas", 0) or 0)
    canary_ready = int(canary.get("status", {}).get("readyReplicas", 0) or 0)
    desired = int(spec.get("replicas", 1) or 0)
    weights = status.get("canary", {}).get("weights")
    if weights and "canary" in weights:
        traffic = float(weights["canary"].get("weight", 0))
    else:
        total = stable_ready + canary_ready
        traffic = 100.0 * canary_ready / total if total else 0.0
    return {
        "phase": str(status.get("phase", "")),
        "message": str(status.get("message", "")),
        "aborted": bool(status.get("abort", False)),
        "regression_promoted": bool(canary_hash) and canary_hash == stable_hash,
        "previous_revision_ready": bool(stable) and desired > 0 and stable_ready >= desired,
        "stable_ready_pods": stable_ready,
        "canary_ready_pods": canary_ready,
        "canary_traffic_percent": traffic,
        "replicasets": len(owned),
    }


def canary_rollback_probe(ctx: CheckContext) -> dict[str, Any]:
    """params: rollout, namespace, inject (argv run first, e.g. setting the regressed
    image; null: the regression was injected by the operator), wait_s, poll_s,
    recorded. The kube context is $HARNESS_STAGING_CONTEXT. observations: those of
    judge_canary_rollback and waited_s."""
    rec = _recorded(ctx)
    if rec is not None:
        rollout = json.loads((rec / "rollout.json").read_text())
        replicasets = json.loads((rec / "replicasets.json").read_text())
        return {**judge_canary_rollback(rollout, replicasets), "waited_s": 0.0}
    _require(
        ctx,
        ["kubectl"],
        ["HARNESS_STAGING_CONTEXT"],
        "needs a Kubernetes staging cluster running Argo Rollouts and the Rollout to probe"
        " (not shipped here)",
    )
    kubectl = [
        "kubectl",
        "--context",
        os.environ["HARNESS_STAGING_CONTEXT"],
        "--namespace",
        str(ctx.params.get("namespace", "staging")),
    ]
    name = str(ctx.params.get("rollout", "model-canary"))
    if ctx.params.get("inject"):
        proc = _run([str(a) for a in ctx.params["inject"]])
        if proc.returncode != 0:
            raise RuntimeError(f"could not inject the regression: {proc.stderr.strip()[-500:]}")
    t0 = time.monotonic()
    deadline = t0 + float(ctx.params.get("wait_s", 900))
    while True:  # until the controller has decided: aborted, or healthy (promoted)
        got = _run([*kubectl, "get", f"rollouts.argoproj.io/{name}", "-o", "json"], 60)
        if got.returncode != 0:
            raise RuntimeError(f"kubectl get rollout failed: {got.stderr.strip()[-500:]}")
        rollout = json.loads(got.stdout)
        status = rollout.get("status", {})
        if status.get("abort") or status.get("phase") in ("Healthy", "Degraded"):
            break
        if time.monotonic() > deadline:
            break  # judged as it stands: a stalled rollout is not a rollback
        time.sleep(float(ctx.params.get("poll_s", 10)))
    got = _run([*kubectl, "get", "replicasets", "-o", "json"], 60)
    if got.returncode != 0:
        raise RuntimeError(f"kubectl get replicasets failed: {got.stderr.strip()[-500:]}")
    replicasets = json.loads(got.stdout)
    ctx.attach_json("rollout.json", rollout)
    ctx.attach_json("replicasets.json", replicasets)
    return {
        **judge_canary_rollback(rollout, replicasets),
        "waited_s": round(time.monotonic() - t0, 1),
    }


# ======================================================= AC-INFRA-002 GPU accounting
SACCT_FIELDS = ("JobIDRaw", "JobName", "Partition", "State", "NNodes", "ElapsedRaw", "AllocTRES")
_PREEMPTED = ("PREEMPTED", "REQUEUED")


def _gpus(tres: str) -> int:
    """GPUs in an AllocTRES string: ``gres/gpu=N``, else the sum of ``gres/gpu:TYPE=N``."""
    items = dict(kv.split("=", 1) for kv in tres.split(",") if "=" in kv)
    if "gres/gpu" in items:
        return int(items["gres/gpu"])
    return sum(int(v) for k, v in items.items() if k.startswith("gres/gpu:"))


def judge_gpu_accounting(sacct_text: str, partition: str) -> dict[str, Any]:
    """``sacct --duplicates --allocations --parsable2`` output (with its header) of
    one job: every allocation it had, the preempted ones included. Observations:
    allocations, preemptions, completed (the last allocation COMPLETED),
    on_requested_pool (every allocation ran in ``partition``), max_nodes,
    allocations_without_gpus, gpu_seconds (GPUs x elapsed seconds, summed)."""
    lines = [ln for ln in sacct_text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("sacct printed nothing: no such job in the accounting database")
    header = lines[0].split("|")
    missing = [f for f in SACCT_FIELDS if f not in header]
    if missing:
        raise ValueError(f"sacct output lacks the fields {missing} (header {header})")
    rows = [dict(zip(header, ln.split("|"), strict=False)) for ln in lines[1:]]
    states = [r["State"].split()[0] if r["State"] else "" for r in rows]
    gpu_s = without = 0
    for r in rows:
        gpus, elapsed = _gpus(r["AllocTRES"]), int(r["ElapsedRaw"] or 0)
        gpu_s += gpus * elapsed
        without += int(gpus == 0)
    return {
        "job": rows[0]["JobIDRaw"] if rows else "",
        "allocations": len(rows),
        "preemptions": sum(s in _PREEMPTED for s in states),
        "completed": bool(states) and states[-1] == "COMPLETED",
        "on_requested_pool": bool(rows) and all(r["Partition"] == partition for r in rows),
        "max_nodes": max((int(r["NNodes"] or 0) for r in rows), default=0),
        "allocations_without_gpus": without,
        "gpu_seconds": gpu_s,
    }


def gpu_accounting_probe(ctx: CheckContext) -> dict[str, Any]:
    """params: partition (default $HARNESS_GPU_PARTITION or 'gpu'), recorded. The job is
    $HARNESS_SLURM_JOB_ID: a distributed job launched on the GPU pool and preempted
    once. observations: those of judge_gpu_accounting."""
    partition = str(ctx.params.get("partition") or os.environ.get("HARNESS_GPU_PARTITION") or "gpu")
    rec = _recorded(ctx)
    if rec is not None:
        return judge_gpu_accounting((rec / "sacct.txt").read_text(), partition)
    _require(
        ctx,
        ["sacct"],
        ["HARNESS_SLURM_JOB_ID"],
        "needs a Slurm cluster with a GPU pool and job accounting",
    )
    proc = _run(
        [
            "sacct",
            "--jobs",
            os.environ["HARNESS_SLURM_JOB_ID"],
            "--duplicates",
            "--allocations",
            "--parsable2",
            "--format=" + ",".join(SACCT_FIELDS),
        ],
        120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sacct failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    ctx.attach(proc.stdout.encode(), "sacct.txt")
    return judge_gpu_accounting(proc.stdout, partition)


# =========================================================== AC-INFRA-004 terraform
def judge_terraform_plan(
    init_exit: int, validate_json: str, plan_jsonl: str, plan_exit: int
) -> dict[str, Any]:
    """``terraform init``'s exit code, ``terraform validate -json`` and ``terraform plan
    -detailed-exitcode -json`` (its machine-readable lines and exit code: 0 no changes,
    1 error, 2 changes). Observations: init_exit_code, valid, validate_errors,
    plan_exit_code, plan_errors (error diagnostics), planned (the plan finished: exit 0
    or 2 with no error), to_add, to_change, to_destroy."""
    try:
        v = json.loads(validate_json) if validate_json.strip() else {}
    except ValueError:
        v = {}
    errors = 0
    summary: dict[str, Any] = {}
    for line in plan_jsonl.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("type") == "diagnostic" and msg.get("@level") == "error":
            errors += 1
        if msg.get("type") == "change_summary":
            summary = msg.get("changes", {})
    return {
        "init_exit_code": int(init_exit),
        "valid": bool(v.get("valid", False)),
        "validate_errors": int(v.get("error_count", 0 if v.get("valid") else 1)),
        "plan_exit_code": int(plan_exit),
        "plan_errors": errors,
        "planned": plan_exit in (0, 2) and errors == 0 and bool(summary),
        "to_add": int(summary.get("add", 0)),
        "to_change": int(summary.get("change", 0)),
        "to_destroy": int(summary.get("remove", 0)),
    }


def terraform_plan_probe(ctx: CheckContext) -> dict[str, Any]:
    """params: recorded. The root module is $HARNESS_TERRAFORM_DIR; the cloud account is
    whatever its provider configuration and the passed environment select.
    observations: those of judge_terraform_plan."""
    rec = _recorded(ctx)
    if rec is not None:
        return judge_terraform_plan(
            int((rec / "init.exit").read_text()),
            (rec / "validate.json").read_text(),
            (rec / "plan.jsonl").read_text(),
            int((rec / "plan.exit").read_text()),
        )
    _require(
        ctx,
        ["terraform"],
        ["HARNESS_TERRAFORM_DIR"],
        "needs terraform, provider credentials and the infrastructure repository",
    )
    chdir = "-chdir=" + os.environ["HARNESS_TERRAFORM_DIR"]
    init = _run(["terraform", chdir, "init", "-input=false", "-no-color"], 600)
    validate = _run(["terraform", chdir, "validate", "-json", "-no-color"], 300)
    plan = _run(
        [
            "terraform",
            chdir,
            "plan",
            "-input=false",
            "-lock=false",
            "-detailed-exitcode",
            "-no-color",
            "-json",
        ],
        1800,
    )
    ctx.attach(validate.stdout.encode(), "validate.json")
    ctx.attach(plan.stdout.encode(), "plan.jsonl")
    return judge_terraform_plan(init.returncode, validate.stdout, plan.stdout, plan.returncode)
