"""Mutants of the sign-off machinery (for contracts/release.yaml)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.policy import stamped_purpose as _REAL_STAMPED_PURPOSE
from harness.replay import promotion_record as _REAL_PROMOTION_RECORD  # before any patch
from harness.replay import promotion_rules as _REAL_PROMOTION_RULES


def promotion_rules_refusing_only_no_go(
    run_dir: Path,
    allowed_keys: list[Path],
    root: Path | None = None,
    required: Any = None,
    policy: Any = None,
    target: str = "",
    **options: Any,
) -> list[Any]:
    """A promotion gate whose verdict rule refuses NO-GO instead of accepting only GO:
    an UNPROVEN run (a mutant survived, a check skipped) is promoted
    (harness.replay:promotion_rules)."""
    import json

    from harness.replay import Rule

    rules = _REAL_PROMOTION_RULES(run_dir, allowed_keys, root, required, policy, target, **options)
    out = []
    for rule in rules:
        if rule.name == "verdict":
            v = json.loads((run_dir / "verdict.json").read_text()).get("verdict")
            rule = Rule("verdict", v != "NO-GO", f"the run's verdict is {v}")
        out.append(rule)
    return out


def promotion_rules_refusing_only_fast(
    run_dir: Path,
    allowed_keys: list[Path],
    root: Path | None = None,
    required: Any = None,
    policy: Any = None,
    target: str = "",
    **options: Any,
) -> list[Any]:
    """The profile rule written as "not the fast profile": a mutants-only ``--teeth`` run,
    GO whenever every mutant is killed, is promoted (harness.replay:promotion_rules)."""
    import json

    from harness.replay import Rule

    out = []
    real = _REAL_PROMOTION_RULES(run_dir, allowed_keys, root, required, policy, target, **options)
    for rule in real:
        if rule.name == "profile":
            p = json.loads((run_dir / "verdict.json").read_text()).get("profile")
            rule = Rule("profile", p != "fast", f"profile {p}")
        out.append(rule)
    return out


def git_state_ignoring_untracked(root: Path) -> dict[str, Any]:
    """``git status --untracked-files=no``: a contract or check file git does not track
    leaves the run marked clean (harness.environment:git_state, as shipped before)."""
    import subprocess

    def git(*args: str) -> str | None:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def promotion_record_names_run_signer(
    run_dir: Path, name: str, keyid: str, signer_name: str
) -> dict[str, Any]:
    """The promotion record's ``promoted_by`` copied from the run's own signer
    (``verdict["keyid"]``, one line above) instead of the promoter's key: every
    sign-off looks as if the run's signer gave it (harness.replay:promotion_record)."""
    import json

    record = _REAL_PROMOTION_RECORD(run_dir, name, keyid, signer_name)
    verdict = json.loads((run_dir / "verdict.json").read_text())
    return {**record, "promoted_by": verdict.get("keyid")}


def verify_trusting_verdict_json(run_dir: Path, public_keys: list[Any]) -> list[str]:
    """``verify_run`` with one comparison forgotten: the signed payload is checked, but
    verdict.json (what promotion and reports read) is never compared with it, so a
    NO-GO edited to GO in verdict.json verifies (harness.verify:verify_run)."""
    from harness import verify as v

    found = v._Findings()
    dsse = run_dir / "verdict.dsse.json"
    opened = v._open_file(dsse, public_keys, v.VERDICT_TYPE, found)
    if opened is None or opened.payload is None:
        return found.result()
    verdict = v._payload_json(dsse, opened.payload, found)
    if verdict is v.UNREAD or v.shape_problems(v.VERDICT_SCHEMA, verdict):
        return found.result() or ["malformed verdict"]
    run_files, claimed = verdict["run_files"], verdict["criteria"]
    v._check_run_files(run_dir, run_files, found)
    v._check_listing(run_dir, run_files, claimed, found)
    v._check_audit(run_dir, verdict, found)
    v._check_results(run_dir, verdict, found)
    for cid, meta in sorted(claimed.items()):
        v._verify_criterion(run_dir / "criteria" / cid, cid, meta, verdict, public_keys, found)
    return found.result()


def line_hash_without_prev(line: bytes) -> str:
    """Each link hashes the event but not its own ``prev`` field, so a line's hash does
    not depend on what came before it: an edited line whose successor is re-linked to it
    leaves the head unchanged (auditchain:line_hash)."""
    import json

    try:
        record = json.loads(line)
    except ValueError:
        return hashlib.sha256(line.rstrip(b"\n")).hexdigest()
    if isinstance(record, dict):
        record.pop("prev", None)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def check_started_invariants_only(self: Any, key: str, kind: str) -> None:
    """The writer records a check's start only for an invariant's own check, not for
    the falsifiers attacking it (harness.evidence:EvidenceWriter.check_started)."""
    if kind == "check":
        _ORIGINAL_CHECK_STARTED(self, key, kind)


from harness.evidence import EvidenceWriter as _EvidenceWriter  # noqa: E402

_ORIGINAL_CHECK_STARTED = _EvidenceWriter.check_started


def valid_signoffs_under_any_role_key(
    run_dir: Path, policy: Any, target: Any, candidate: dict[str, str]
) -> tuple[list[str], list[str]]:
    """A sign-off opened under any committed role key instead of its own role's: one role
    can sign the other's statement, so one person gives both sign-offs
    (harness.policy:valid_signoffs)."""
    import json

    from harness.policy import SIGNOFF_TYPE, signoff_path, signoff_statement
    from harness.shapes import open_envelope_strict
    from harness.signing import canonical_json, load_public_key

    every = [load_public_key(k) for k in policy.roles.values()]
    good, why = [], []
    for role in target.roles:
        path = signoff_path(run_dir, role, target.name)
        if not path.is_file():
            why.append(f"{role}: no sign-off ({path})")
            continue
        opened = open_envelope_strict(json.loads(path.read_bytes()), every, SIGNOFF_TYPE)
        expected = canonical_json(signoff_statement(run_dir, role, target.name, candidate))
        if opened.problems or opened.payload is None:
            why.append(f"{role}: not signed by a role's key")
        elif opened.payload != expected:
            why.append(f"{role}: the signed statement differs")
        else:
            good.append(role)
    return good, why


def artifact_digest_of_names(path: Path) -> str:
    """A candidate digest over the artifact's file names: the same files rewritten with
    other bytes keep their digest (harness.policy:artifact_digest), a check on the name
    instead of the content."""
    import hashlib

    names = (
        [path.name]
        if path.is_file()
        else sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    )
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def stamped_purpose_of_files_only(path: Path) -> set[str]:
    """The purpose stamp read only when the candidate is one file: a checkpoint folder
    (the trainer's layout, sharded or not) is never opened, so an ablation checkpoint
    passes (harness.policy:stamped_purpose, written for single-file checkpoints)."""
    return _REAL_STAMPED_PURPOSE(path) if path.is_file() else set()


def audited_candidate_governance_only(
    policy: Any, spec: Any, anchors: Any = (), during_run: Any = None
) -> list[str]:
    """The lifecycle rule that checks the log verifies and that data governance allowed
    a training run, but never links the candidate's bytes to a checkpoint that an
    allowed run wrote: any checkpoint, trained anywhere, passes once one run was allowed
    (harness.policy:audited_candidate)."""
    import auditchain

    if policy.audit_log is None:
        return []
    _, _, problems = auditchain.verify_chain(policy.audit_log)
    if problems:
        return [f"{policy.audit_log}: {problems[0]}"]
    allowed = [
        e for e in auditchain.read_events(policy.audit_log)
        if e.get("event") == "data.training_decision" and e.get("decision") == "allowed"
    ]  # fmt: skip
    return [] if allowed else ["no data governance decision allowed a training run"]
