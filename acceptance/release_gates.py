"""Release checks on the harness's own sign-off machinery: promotion, audit, sign-off.

Each check builds a small real project in its scratch directory, runs the
harness on it (signed and unsigned, GO and NO-GO), and then exercises
``harness promote`` / ``harness verify`` on the resulting evidence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import auditchain
from harness.context import CheckContext

CONTRACT = """version: 1
contract: {{name: probe-{n}, title: a probe contract for release gates}}
criteria:
  - id: AC-PROBE-{n}
    title: the probe file exists
    severity: blocker
    references: [release gate probe]
    invariants: [INV-PROBE-{n}]
invariants:
  - id: INV-PROBE-{n}
    title: probe.txt exists
    check:
      python: harness.checks.files:files_exist
      params: {{paths: [{path}]}}
    expect: {{missing: {{eq: 0}}}}
falsifiers:
  - id: FALSIFY-PROBE-{n}
    title: a missing file is reported
    kind: mutant
    target: INV-PROBE-{n}
    mutant: {{params: {{paths: [{mutant_path}]}}}}
"""


GIT = ["git", "-c", "user.name=probe", "-c", "user.email=probe@localhost"]


def commit_project(project: Path, message: str = "probe") -> str:
    """Commit everything in ``project`` (a git repo on first use, its evidence ignored),
    so a run made now is from a clean checkout; returns the commit."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run([*GIT, *args], cwd=project, check=True, capture_output=True)
        return out.stdout.decode().strip()

    if not (project / ".git").exists():
        git("init", "-q")
        (project / ".gitignore").write_text("evidence/\n.harness/\n__pycache__/\n")
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", message)
    return git("rev-parse", "HEAD")


def probe_run(
    root: Path,
    name: str,
    *,
    signer: Any = None,
    go: bool = True,
    teeth: bool = True,
    profile: str = "full",
    criteria: int = 1,
    only: str | None = None,
) -> Path:
    """Run the harness on a project of ``criteria`` criteria under ``root``, committed
    to git first; return the run dir. ``go=False``: the checks fail (NO-GO); ``teeth=False``:
    the mutants change nothing, so they are MISSED and the run is UNPROVEN; ``profile``
    and ``only`` (one criterion ID): a teeth/fast run or a selection."""
    from harness.executor import LocalProcessExecutor
    from harness.loader import load_contract_set
    from harness.runner import run_contracts

    project = root / name
    (project / "contracts").mkdir(parents=True, exist_ok=True)
    if not (project / "probe.txt").exists():
        (project / "probe.txt").write_text("present\n")
    target = "probe.txt" if go else "absent.txt"
    mutant_path = "no-such-file.txt" if teeth else target
    for n in (f"{i:03d}" for i in range(1, criteria + 1)):
        (project / "contracts" / f"probe-{n}.yaml").write_text(
            CONTRACT.format(path=target, mutant_path=mutant_path, n=n)
        )
    if not (project / ".git").exists():
        commit_project(project)
    contracts = load_contract_set([project / "contracts"])
    result = run_contracts(
        contracts,
        [c for c in contracts.criteria if only is None or c.id == only],
        executor=LocalProcessExecutor(1),
        seed=1,
        profile=profile,
        root=project,
        evidence_root=project / "evidence",
        signer=signer,
        default_timeout=60,
    )
    return Path(result.evidence_dir)


def release_candidate(project: Path) -> Any:
    """Train the release candidate (a tiny mlp, purpose ship), an ablation, and a ship
    checkpoint trained outside the audited pipeline (its lifecycle events went to another
    log) into ``project``, and write the release policy that binds each to a target and
    names the project's lifecycle log; returns it."""
    import os

    from harness.policy import load_policy
    from harness.signing import generate_keypair
    from kernels import lifecycle
    from kernels.train import TrainConfig, train

    # 610 parameters: 400 steps of 32 examples clear the ship gate's 20 examples/param
    mlp = {"family": "mlp", "model": {"hidden": [8]}, "batch_size": 32, "eval_every": 200}
    with (project / ".gitignore").open("a") as fh:
        fh.write("audit/\n")  # the lifecycle log grows after the commit it certifies
    os.environ[lifecycle.AUDIT_ENV] = str(project / "audit" / "lifecycle.jsonl")
    ship = train(
        TrainConfig(purpose="ship", steps=400, ckpt_every=400, threads=1, **mlp),
        project / "release-run",
    )
    ablation = train(
        TrainConfig(purpose="ablation", steps=20, ckpt_every=20, threads=1, **mlp),
        project / "ablation-run",
    )
    os.environ[lifecycle.AUDIT_ENV] = str(project.parent / "elsewhere" / "lifecycle.jsonl")
    unaudited = train(
        TrainConfig(purpose="ship", steps=400, ckpt_every=400, seed=5, threads=1, **mlp),
        project / "unaudited-run",
    )
    os.environ[lifecycle.AUDIT_ENV] = str(project / "audit" / "lifecycle.jsonl")
    _, pub = generate_keypair(project.parent / "keys" / "ml-lead.key")
    (project / "keys").mkdir(exist_ok=True)
    (project / "keys" / "ml-lead.pub").write_bytes(pub.read_bytes())
    targets = {"production": ship, "ablation": ablation, "unaudited": unaudited}
    (project / "release-policy.yaml").write_text(
        "version: 1\naudit-log: audit/lifecycle.jsonl\nroles: {ml-lead: keys/ml-lead.pub}\n"
        "targets:\n"
        + "".join(
            f"  {name}: {{signoffs: {{roles: [ml-lead]}}, "
            f"candidate: [{_rel(run.checkpoint, project)}]}}\n"
            for name, run in targets.items()
        )
    )
    return load_policy(project / "release-policy.yaml", project)


def _rel(path: Any, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def blockers(run_dir: Path) -> list[str]:
    """The blocker criteria of the probe project a run was made in (its policy default)."""
    from harness.loader import load_contract_set

    contracts = load_contract_set([run_dir.parent.parent / "contracts"])
    return sorted(c.id for c in contracts.criteria if c.severity == "blocker")


def _keys(scratch: Path, *names: str) -> dict[str, tuple[Path, Path]]:
    from harness.signing import generate_keypair

    return {n: generate_keypair(scratch / "keys" / f"{n}.key") for n in names}


def promotion_gate(ctx: CheckContext) -> dict[str, Any]:
    """Promotion without a GO verdict (NO-GO, or UNPROVEN: a mutant MISSED), without a
    signature, or signed by a key not on the allowed list is refused; a valid one is
    recorded, signed, in a chained ledger."""
    from harness.policy import candidate_digests, write_signoff
    from harness.replay import PromotionRefused, promote, verify_ledger
    from harness.signing import load_public_key, load_signer

    keys = _keys(ctx.scratch, "release", "intruder")
    release = load_signer(keys["release"][0])
    allowed = [keys["release"][1]]
    ledger = ctx.scratch / "promotions.jsonl"
    unsigned_go = probe_run(ctx.scratch, "unsigned-go")
    signed_no_go = probe_run(ctx.scratch, "signed-no-go", signer=release, go=False)
    intruder_go = probe_run(ctx.scratch, "intruder-go", signer=load_signer(keys["intruder"][0]))
    signed_unproven = probe_run(ctx.scratch, "signed-unproven", signer=release, teeth=False)
    # a signed NO-GO whose verdict.json was edited to say GO after signing
    forged = probe_run(ctx.scratch, "forged-go", signer=release, go=False)
    text = (forged / "verdict.json").read_bytes()
    (forged / "verdict.json").write_bytes(text.replace(b'"verdict":"NO-GO"', b'"verdict":"GO"'))

    # a readiness run of both criteria at the candidate commit is the only promotable one
    full = probe_run(ctx.scratch, "candidate", signer=release, criteria=2)
    candidate = full.parent.parent
    teeth = probe_run(ctx.scratch, "candidate", signer=release, criteria=2, profile="teeth")
    fast = probe_run(ctx.scratch, "candidate", signer=release, criteria=2, profile="fast")
    selection = probe_run(ctx.scratch, "candidate", signer=release, criteria=2, only="AC-PROBE-001")
    (candidate / "morechecks.py").write_text("# a check file git does not track\n")
    untracked = probe_run(ctx.scratch, "candidate", signer=release, criteria=2)
    (candidate / "morechecks.py").unlink()
    older = probe_run(ctx.scratch, "candidate", signer=release, criteria=2)
    (candidate / "probe.txt").write_text("present, and changed since\n")
    # the candidate is a checkpoint trained by the core (purpose ship), bound by the
    # release policy; an ablation checkpoint is never promoted
    policy = release_candidate(candidate)
    head = commit_project(candidate, "the release candidate")
    signed_go = probe_run(ctx.scratch, "candidate", signer=release, criteria=2)
    required = blockers(signed_go)

    def refused(
        run_dir: Path, rule: str, signer: Any = release, target: str = "production"
    ) -> bool:
        """Refused, and for the named rule (a refusal for another reason proves nothing)."""
        try:
            promote(
                run_dir, target, allowed, signer, ledger, "release-manager",
                candidate, required, policy,
            )  # fmt: skip
        except PromotionRefused as exc:
            return any(r.startswith(f"{rule}:") for r in exc.reasons)
        return False

    obs: dict[str, Any] = {
        "refused_without_signature": refused(unsigned_go, "signature"),
        "refused_without_go": refused(signed_no_go, "verdict"),
        "refused_unproven": refused(signed_unproven, "verdict"),
        "refused_forged_verdict": refused(forged, "signature"),
        "refused_key_not_allowed": refused(intruder_go, "signature"),
        "refused_unsigned_promotion": refused(signed_go, "a promotion must be signed", None),
        "refused_teeth_run": refused(teeth, "profile"),
        "refused_fast_run": refused(fast, "profile"),
        "refused_selection": refused(selection, "required criteria"),
        "refused_untracked_file": refused(untracked, "clean tree"),
        "refused_older_commit": refused(older, "candidate commit"),
        "refused_ablation_candidate": refused(signed_go, "candidate", target="ablation"),
        "refused_unaudited_candidate": refused(signed_go, "lifecycle", target="unaudited"),
        "ledger_empty_after_refusals": not ledger.exists() or ledger.read_text() == "",
    }
    ml_lead = load_signer(candidate.parent / "keys" / "ml-lead.key")
    digests = candidate_digests(policy, policy.target("production"))
    write_signoff(signed_go, "ml-lead", "production", digests, ml_lead)
    record = promote(
        signed_go, "production", allowed, release, ledger, "release-manager", candidate,
        required, policy,
    )  # fmt: skip
    problems = verify_ledger(ledger, [load_public_key(keys["release"][1])])
    assert policy.audit_log is not None
    _, _, chain = auditchain.verify_chain(policy.audit_log)
    events = auditchain.read_events(policy.audit_log)
    written = [e for e in events if e.get("event") == "checkpoint.write"]
    lines = ledger.read_text().splitlines()
    obs.update(
        valid_recorded=record["run_id"] == signed_go.name and len(lines) == 1,
        record_binds_commit=record["git"] == {"commit": head, "dirty": False},
        record_binds_checkpoint=record.get("candidate")
        == candidate_digests(policy, policy.target("production")),
        ledger_verifies=problems == [],
        ledger_event=json.loads(lines[0]).get("event") if lines else "",
        ledger_problems=problems[:3],
        lifecycle_chain_problems=len(chain),
        # the model's own chain: its training, its checkpoint, then its promotion
        lifecycle_promotion=bool(events)
        and events[-1].get("event") == "promotion"
        and events[-1].get("record") == record,
        lifecycle_checkpoint_before_promotion=any(
            e.get("checkpoint") == str(policy.root / policy.target("production").candidate[0])
            for e in written
        ),
    )
    ctx.attach(ledger, "promotions.jsonl")
    return obs


def audit_trail(ctx: CheckContext) -> dict[str, Any]:
    """Every step of a run is an audit event, the chain verifies, its head is in the
    signed verdict, and a removed or edited line is detected."""

    from harness.signing import load_public_key, load_signer
    from harness.verify import verify_run

    keys = _keys(ctx.scratch, "release")
    run_dir = probe_run(ctx.scratch, "audited", signer=load_signer(keys["release"][0]))
    pub = [load_public_key(keys["release"][1])]
    events = [json.loads(x)["event"] for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    head, count, problems = auditchain.verify_chain(run_dir / "audit.jsonl")
    verdict = json.loads((run_dir / "verdict.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    n_inv = sum(len(c["invariants"]) for c in results["criteria"])
    n_fal = sum(len(c["falsifiers"]) for c in results["criteria"])
    expected = {
        "run_start": 1,
        "check_start": n_inv + n_fal,
        "check_finish": n_inv,
        "falsifier_outcome": n_fal,
        "bundle_sealed": len(results["criteria"]),
        "verdict": 1,
    }
    missing = {k: v - events.count(k) for k, v in expected.items() if events.count(k) != v}
    ctx.attach(run_dir / "audit.jsonl", "audit.jsonl")
    # tamper: a copy with one line removed, one with an edited line, and one with an
    # edited line whose successor is re-linked to it (as an attacker who knows the
    # hash would do): only a hash that covers each line's own link catches the last

    detected = []
    for how in ("delete", "edit", "relink"):
        copy = ctx.scratch / f"tampered-{how}"
        shutil.copytree(run_dir, copy)
        lines = (copy / "audit.jsonl").read_text().splitlines(keepends=True)
        if how == "delete":
            del lines[len(lines) // 2]
        else:
            lines[1] = lines[1].replace('"check_start"', '"check_skipped"')
        if how == "relink":
            nxt = json.loads(lines[2])
            nxt["prev"] = auditchain.line_hash(lines[1].encode())
            lines[2] = json.dumps(nxt, sort_keys=True, default=str) + "\n"
        (copy / "audit.jsonl").write_text("".join(lines))
        detected.append(any("audit.jsonl" in p for p in verify_run(copy, pub)))
    return {
        "chain_problems": len(problems),
        "events_missing": len(missing),
        "missing_detail": missing,
        "head_in_signed_verdict": head == verdict["audit_head"] and count == verdict["audit_count"],
        "bundle_verifies": verify_run(run_dir, pub) == [],
        "tamper_detected": all(detected),
        "tamper_cases": len(detected),
        "events": len(events),
    }


def _stamped_weights(note: str) -> bytes:
    """A safetensors file with no tensors, stamped ``purpose: ship``: a candidate the
    candidate rule accepts, so the sign-off rules are what this check judges."""
    header = json.dumps({"__metadata__": {"purpose": "ship", "note": note}}).encode()
    return len(header).to_bytes(8, "little") + header


def signoff(ctx: CheckContext) -> dict[str, Any]:
    """Sign-off under a release policy (docs/releasing.md), with the roles' keys committed
    in ``params.keys`` (never made by this check): a promotion is refused with a missing
    sign-off, a sign-off by a key not the role's (another role's, or one on no file), one
    moved to another role, and one of another candidate; with both roles' sign-offs it is
    recorded, binding the candidate and the sign-offs, and its record is the promoter's."""
    from harness.policy import candidate_digests, load_policy, signoff_path, write_signoff
    from harness.replay import PromotionRefused, promote, verify_ledger
    from harness.signing import generate_keypair, load_public_key, load_signer

    names = list(ctx.params.get("signers", ["security-engineer", "ml-lead"]))
    committed = Path(ctx.root) / str(ctx.params.get("keys", "tests/fixtures/release-keys"))
    role_key = {n: committed / f"{n}.key" for n in names}
    project = ctx.scratch / "signoff"
    (project / "keys").mkdir(parents=True)
    for n in names:
        shutil.copyfile(committed / f"{n}.key.pub", project / "keys" / f"{n}.pub")
    (project / "model").mkdir()
    weights = project / "model" / "model.safetensors"
    weights.write_bytes(_stamped_weights("the release candidate"))
    (project / "release-policy.yaml").write_text(
        "version: 1\nroles:\n"
        + "".join(f"  {n}: keys/{n}.pub\n" for n in names)
        + f"targets:\n  production:\n    signoffs: {{roles: [{', '.join(names)}]}}\n"
        + "    candidate: [model]\n"
    )
    run_key, run_pub = generate_keypair(ctx.scratch / "keys" / "run.key")
    release_key, release_pub = generate_keypair(ctx.scratch / "keys" / "release.key")
    intruder_key, _ = generate_keypair(ctx.scratch / "keys" / "intruder.key")
    release = load_signer(release_key)  # the promoter; the run is signed by another key
    run_dir = probe_run(ctx.scratch, "signoff", signer=load_signer(run_key))
    policy = load_policy(project / "release-policy.yaml", project)
    spec = policy.target("production")
    ledger = ctx.scratch / "promotions.jsonl"

    def sign(role: str, key: Path) -> None:
        write_signoff(
            run_dir,
            role,
            "production",
            candidate_digests(policy, spec),
            load_signer(key),
        )

    def refused() -> bool:
        try:
            promote(run_dir, "production", [run_pub], release, ledger, "rm", None, None, policy)
        except PromotionRefused as exc:
            return any(r.startswith("sign-offs:") for r in exc.reasons)
        return False

    first, second = names[0], names[-1]
    sign(second, role_key[second])
    obs: dict[str, Any] = {"refused_missing_signoff": refused()}
    sign(first, role_key[second])  # another role's key
    obs["refused_other_roles_key"] = refused()
    sign(first, intruder_key)  # a key on no one's file
    obs["refused_key_on_no_file"] = refused()
    moved = signoff_path(run_dir, second, "production").read_bytes()
    signoff_path(run_dir, first, "production").write_bytes(moved)
    obs["refused_moved_to_another_role"] = refused()
    sign(first, role_key[first])
    # changed after sign-off: another candidate under the same file name
    weights.write_bytes(_stamped_weights("another candidate, same file name"))
    obs["refused_other_candidate"] = refused()
    weights.write_bytes(_stamped_weights("the release candidate"))
    record = promote(run_dir, "production", [run_pub], release, ledger, "rm", None, None, policy)
    obs.update(
        ledger_empty_after_refusals=len(ledger.read_text().splitlines()) == 1,
        recorded_signoffs=len(record.get("signoffs", [])),
        record_binds_candidate=record.get("candidate") == candidate_digests(policy, spec),
        record_promoted_by_promoter=record["promoted_by"] == release.keyid,
        ledger_verifies=verify_ledger(ledger, [load_public_key(release_pub)]) == [],
    )
    return obs
