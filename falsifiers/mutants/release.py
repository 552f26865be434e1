"""Mutants of the sign-off machinery (for contracts/release.yaml)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.replay import promotion_record as _REAL_PROMOTION_RECORD  # before any patch


def promotion_refuses_only_no_go(run_dir: Path, allowed_keys: list[Path]) -> list[str]:
    """A promotion gate that refuses NO-GO instead of accepting only GO: an UNPROVEN run
    (a mutant survived, a check skipped) is promoted (harness.replay:promotion_problems)."""
    import json

    from harness.signing import load_public_key
    from harness.verify import verify_run

    if not allowed_keys:
        return ["no allowed keys"]
    problems = verify_run(run_dir, [load_public_key(k) for k in allowed_keys])
    if problems:
        return ["the run does not verify under an allowed key:", *problems]
    verdict = json.loads((run_dir / "verdict.json").read_text())
    return ["the run's verdict is NO-GO"] if verdict.get("verdict") == "NO-GO" else []


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
    leaves the head unchanged (harness.audit:line_hash)."""
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
