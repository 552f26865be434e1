"""A real model's lifecycle, audited end to end in one hash-chained log.

The core trains a current model, a good candidate and a broken one (shuffled labels),
serves the current one, lets the canary refuse the broken candidate (the rollback) and
accept the good one, snapshots the served checkpoint and restores it, and is refused
a restore of a tampered copy. Every step appends to the lifecycle log
(``kernels.lifecycle``); this check walks the chain and links each event to the bytes
on disk it names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.context import CheckContext

REQUIRED_EVENTS = (
    "data.training_decision",
    "training.start",
    "checkpoint.write",
    "training.finish",
    "model.serve",
    "canary.decision",
    "canary.rollback",
    "backup.snapshot",
    "backup.restore",
    "backup.restore_refused",
)


def model_lifecycle_audit(ctx: CheckContext) -> dict[str, Any]:
    import auditchain
    from acceptance.release_core import _tampered_copy, train_tiny
    from kernels import lifecycle
    from kernels.backup import RestoreError, restore, snapshot
    from kernels.checkpoint import weights_digest
    from kernels.release import canary_rollout, serve, served_checkpoint

    s = ctx.scratch
    log = s / "lifecycle.jsonl"
    os.environ[lifecycle.AUDIT_ENV] = str(log)
    margin = float(ctx.params.get("margin", 0.25))
    steps = int(ctx.params.get("steps", 400))
    # 610 parameters: the candidate's steps of 32 examples clear the ship gate (20/param)
    mlp = {"family": "mlp", "model": {"hidden": [8]}, "batch_size": 32,
           "eval_every": steps // 4, "ckpt_every": steps // 4}  # fmt: skip
    runs = {
        "current": train_tiny(s / "current", seed=1, steps=steps, **mlp),
        "candidate": train_tiny(
            s / "candidate", seed=2, steps=steps + steps // 2, purpose="ship", **mlp
        ),
        "broken": train_tiny(s / "broken", seed=2, steps=steps, data_fault="shuffle_labels", **mlp),
    }
    deploy = s / "deploy"
    serve(deploy, runs["current"].checkpoint)
    refused = canary_rollout(deploy, runs["broken"].checkpoint, margin)
    accepted = canary_rollout(deploy, runs["candidate"].checkpoint, margin)
    served = served_checkpoint(deploy)
    archive = s / "backup" / "served.tar.gz"
    snapshot({"checkpoint": served}, archive)
    restored = restore(archive, s / "restored")["checkpoint"]
    tampered = s / "backup" / "tampered.tar.gz"
    _tampered_copy(archive, tampered)
    try:
        restore(tampered, s / "restored-tampered")
        tamper_refused = False
    except RestoreError:
        tamper_refused = True

    _, count, problems = auditchain.verify_chain(log)
    events = auditchain.read_events(log)
    kinds = [e.get("event") for e in events]
    unlinked: list[str] = []

    def link(ok: bool, what: str) -> None:
        if not ok:
            unlinked.append(what)

    # every checkpoint on disk has exactly one write event naming its bytes, and no
    # write event names a checkpoint that is not on disk as it says
    written = [e for e in events if e.get("event") == "checkpoint.write"]
    on_disk = sorted(p for r in runs.values() for p in Path(r.out_dir).glob("ckpt-*"))
    for ckpt in on_disk:
        mine = [e for e in written if e.get("checkpoint") == str(ckpt)]
        link(len(mine) == 1, f"{ckpt.name} of {ckpt.parent.name}: {len(mine)} write events")
        if mine:
            link(
                mine[0].get("files") == lifecycle.folder_digests(ckpt),
                f"{ckpt.parent.name}/{ckpt.name}: file digests differ from the event's",
            )
            link(
                mine[0].get("weights_sha256") == weights_digest(ckpt),
                f"{ckpt.parent.name}/{ckpt.name}: weights digest differs from the event's",
            )
    link(len(written) == len(on_disk), f"{len(written)} write events, {len(on_disk)} checkpoints")
    order_ok = True
    for name, r in runs.items():
        seqs = {k: [e["seq"] for e in events if e.get("run") == str(r.out_dir)
                    and e.get("event") == k] for k in ("training.start", "checkpoint.write",
                                                      "training.finish")}  # fmt: skip
        finish = [e for e in events if e.get("event") == "training.finish"
                  and e.get("run") == str(r.out_dir)]  # fmt: skip
        link(len(seqs["training.start"]) == 1 and len(finish) == 1, f"{name}: start/finish")
        if finish:
            link(
                finish[0].get("weights_sha256") == weights_digest(r.checkpoint),
                f"{name}: finish names other weights than its final checkpoint",
            )
        if seqs["training.start"] and finish and seqs["checkpoint.write"]:
            order_ok &= (
                seqs["training.start"][0] < min(seqs["checkpoint.write"])
                and max(seqs["checkpoint.write"]) < seqs["training.finish"][0]
            )
    # every training start names the governance decision that allowed it (its line hash)
    allowed = {
        auditchain.line_hash(raw)
        for raw, e in zip(log.read_bytes().split(b"\n"), events, strict=False)
        if e.get("event") == "data.training_decision" and e.get("decision") == "allowed"
    }
    starts = [e for e in events if e.get("event") == "training.start"]
    link(
        all(e.get("governance") in allowed for e in starts),
        "a training start names no allowed governance decision",
    )
    decisions = [e for e in events if e.get("event") == "canary.decision"]
    rollbacks = [e for e in events if e.get("event") == "canary.rollback"]
    serves = [e for e in events if e.get("event") == "model.serve"]
    broken_sha = weights_digest(runs["broken"].checkpoint)
    cand_sha = weights_digest(runs["candidate"].checkpoint)
    link(
        [d.get("accepted") for d in decisions] == [refused.accepted, accepted.accepted],
        "canary decisions differ from the decisions made",
    )
    link(
        [d.get("candidate_sha256") for d in decisions] == [broken_sha, cand_sha],
        "canary decisions name other candidates",
    )
    link(
        len(rollbacks) == 1
        and rollbacks[0].get("candidate_sha256") == broken_sha
        and rollbacks[0].get("current_sha256") == weights_digest(runs["current"].checkpoint),
        "the rollback does not name the refused candidate and the model kept",
    )
    link(
        [e.get("weights_sha256") for e in serves][-1:] == [weights_digest(served)],
        "the last serve event names other weights than the served model",
    )
    snaps = [e for e in events if e.get("event") == "backup.snapshot"]
    link(
        len(snaps) == 1 and snaps[0].get("sha256") == lifecycle.sha256_file(archive),
        "the snapshot event does not name the archive's bytes",
    )
    restores = [e for e in events if e.get("event") == "backup.restore"]
    link(
        len(restores) == 1 and restores[0].get("files") == lifecycle.folder_digests(s / "restored"),
        "the restore event does not name what "
        "was restored (or a refused restore was recorded as a restore)",
    )
    link(weights_digest(restored) == weights_digest(served), "the restored model differs")
    refusals = [e for e in events if e.get("event") == "backup.restore_refused"]
    link(
        len(refusals) == 1 and refusals[0].get("archive") == str(tampered),
        "the refused restore is not an event",
    )
    # events in lifecycle order: every training finished before the canary, the
    # canary before the backup, the snapshot before the restore
    first = {k: kinds.index(k) for k in REQUIRED_EVENTS if k in kinds}
    order_ok &= (
        max(i for i, k in enumerate(kinds) if k == "training.finish")
        < first.get("canary.decision", -1)
        < first.get("backup.snapshot", -1)
        < first.get("backup.restore", -1)
    )
    # an edited link is detected: a copy whose candidate checkpoint event names other bytes
    edited = s / "edited.jsonl"
    lines = log.read_bytes().split(b"\n")
    idx = next(i for i, e in enumerate(events) if e.get("event") == "checkpoint.write")
    lines[idx] = lines[idx].replace(b'"weights_sha256": "', b'"weights_sha256": "0', 1)
    edited.write_bytes(b"\n".join(lines))
    tamper_detected = bool(auditchain.verify_chain(edited)[2])
    ctx.attach_json("lifecycle-events.json", {"events": kinds, "unlinked": unlinked})
    return {
        "events": count,
        "chain_problems": len(problems),
        "missing_events": [k for k in REQUIRED_EVENTS if k not in kinds],
        "unlinked": unlinked,
        "checkpoints_linked": len(on_disk),
        "in_order": bool(order_ok),
        "rollback_served_current": not refused.accepted,
        "candidate_served": accepted.accepted and weights_digest(served) == cand_sha,
        "tampered_restore_refused": tamper_refused,
        "edited_event_detected": tamper_detected,
    }
