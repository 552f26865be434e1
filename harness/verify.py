"""``harness verify RUN_DIR --key PUB.pem``: check a bundle as a skeptical auditor.

Recomputes every manifest digest, checks every signature, the Statements'
type, subject and configuration digests, walks the audit chain and compares
its head with the signed verdict, and checks that the verdict agrees with the
per-criterion results. Every problem names its path. Needs no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.audit import verify_chain
from harness.evidence import (
    MARKER,
    RUN_FILES,
    SEALS,
    STATEMENT_V1,
    TEST_RESULT,
    build_manifest,
    statement_result,
)
from harness.fsutil import sha256_file
from harness.signing import STATEMENT_TYPE, VERDICT_TYPE, open_envelope

RUN_LEVEL = {*RUN_FILES, "verdict.json", "verdict.dsse.json", "audit.jsonl"}


def _json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable or not JSON ({exc})")
    return None


def verify_run(run_dir: Path, public_keys: list[Any]) -> list[str]:
    """Every problem found in the bundle; an empty list means it verifies."""
    problems: list[str] = []
    if not run_dir.is_dir():
        return [f"{run_dir}: not a run directory"]
    if (run_dir / MARKER).exists():
        problems.append(f"{run_dir / MARKER}: the run is marked incomplete")
    envelope = _json(run_dir / "verdict.dsse.json", problems)
    if envelope is None:
        return problems
    payload, sig_problems = open_envelope(envelope, public_keys, VERDICT_TYPE)
    problems += [f"{run_dir / 'verdict.dsse.json'}: {p}" for p in sig_problems]
    try:
        verdict = json.loads(payload)
    except ValueError:
        return problems + [f"{run_dir / 'verdict.dsse.json'}: payload is not JSON"]
    verdict_file = run_dir / "verdict.json"
    if not verdict_file.exists() or verdict_file.read_bytes() != payload:
        problems.append(f"{verdict_file}: differs from the signed verdict payload")

    # run-level files
    for name, digest in verdict.get("run_files", {}).items():
        path = run_dir / name
        if not path.is_file():
            problems.append(f"{path}: missing (listed in the signed verdict)")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 differs from the signed verdict")
    listed = set(verdict.get("run_files", {}))
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_dir() or rel.startswith("criteria/") or rel == MARKER:
            continue
        if rel not in RUN_LEVEL and rel not in listed:
            problems.append(f"{path}: unexpected file (not covered by any digest)")

    # audit chain
    head, count, chain_problems = verify_chain(run_dir / "audit.jsonl")
    problems += [f"{run_dir / 'audit.jsonl'}: {p}" for p in chain_problems]
    if head != verdict.get("audit_head") or count != verdict.get("audit_count"):
        problems.append(
            f"{run_dir / 'audit.jsonl'}: head {head[:12]}… after {count} lines does "
            f"not match the signed verdict ({str(verdict.get('audit_head'))[:12]}… "
            f"after {verdict.get('audit_count')} lines): truncated or altered"
        )

    # criteria
    claimed = verdict.get("criteria", {})
    folders = (
        {p.name for p in (run_dir / "criteria").iterdir()}
        if (run_dir / "criteria").is_dir()
        else set()
    )
    for extra in sorted(folders - set(claimed)):
        problems.append(f"{run_dir / 'criteria' / extra}: criterion not in the signed verdict")
    for cid, meta in claimed.items():
        problems += _verify_criterion(run_dir / "criteria" / cid, cid, meta, verdict, public_keys)

    # the release verdict follows from the per-criterion verdicts
    blockers = [m["verdict"] for m in claimed.values() if m.get("severity") == "blocker"]
    expect = (
        "NO-GO"
        if "NO-GO" in blockers
        else "UNPROVEN"
        if "UNPROVEN" in blockers
        else "UNPROVEN-FAST"
        if "UNPROVEN-FAST" in blockers
        else "GO"
    )
    if verdict.get("complete") and verdict.get("verdict") != expect:
        problems.append(
            f"{verdict_file}: release verdict {verdict.get('verdict')} does not "
            f"follow from the criteria (expected {expect})"
        )
    return problems


def _verify_criterion(
    folder: Path, cid: str, meta: dict[str, Any], verdict: dict[str, Any], public_keys: list[Any]
) -> list[str]:
    problems: list[str] = []
    if not folder.is_dir():
        return [f"{folder}: missing"]
    env_path = folder / "statement.dsse.json"
    if not env_path.is_file():
        return [f"{env_path}: missing"]
    if sha256_file(env_path) != meta.get("envelope_sha256"):
        problems.append(
            f"{env_path}: envelope digest differs from the signed verdict (replaced or swapped)"
        )
    envelope = _json(env_path, problems)
    if envelope is None:
        return problems
    payload, sig_problems = open_envelope(envelope, public_keys, STATEMENT_TYPE)
    problems += [f"{env_path}: {p}" for p in sig_problems]
    if (
        not (folder / "statement.json").is_file()
        or (folder / "statement.json").read_bytes() != payload
    ):
        problems.append(f"{folder / 'statement.json'}: differs from the signed statement")
    try:
        statement = json.loads(payload)
    except ValueError:
        return problems + [f"{env_path}: payload is not JSON"]
    if statement.get("_type") != STATEMENT_V1:
        problems.append(f"{env_path}: _type is {statement.get('_type')!r}")
    if statement.get("predicateType") != TEST_RESULT:
        problems.append(f"{env_path}: predicateType is {statement.get('predicateType')!r}")
    commit = (verdict.get("git") or {}).get("commit")
    subjects = statement.get("subject", [])
    if commit and not any(s.get("digest", {}).get("gitCommit") == commit for s in subjects):
        problems.append(f"{env_path}: subject does not name the run's commit {commit[:12]}")
    predicate = statement.get("predicate", {})
    config = {
        c.get("name"): c.get("digest", {}).get("sha256") for c in predicate.get("configuration", [])
    }
    for name in ("criterion.yaml", "manifest.json"):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif config.get(name) != sha256_file(path):
            problems.append(f"{path}: sha256 differs from the signed statement's configuration")
    if predicate.get("result") != statement_result(meta.get("verdict", "")):
        problems.append(
            f"{env_path}: result {predicate.get('result')} does not match the "
            f"verdict {meta.get('verdict')} of {cid}"
        )
    local = _json(folder / "verdict.json", problems)
    if local is not None and local.get("verdict") != meta.get("verdict"):
        problems.append(
            f"{folder / 'verdict.json'}: says {local.get('verdict')}, the signed "
            f"verdict says {meta.get('verdict')}"
        )
    # manifest: every listed file matches, nothing unlisted
    manifest = _json(folder / "manifest.json", problems) or {}
    actual = build_manifest(folder)
    for rel, entry in manifest.items():
        if rel not in actual:
            problems.append(f"{folder / rel}: missing (listed in manifest.json)")
        elif actual[rel] != entry:
            problems.append(f"{folder / rel}: sha256 or size differs from manifest.json")
    for rel in sorted(set(actual) - set(manifest)):
        problems.append(f"{folder / rel}: unexpected file (not in manifest.json)")
    for name in SEALS:
        if not (folder / name).is_file():
            problems.append(f"{folder / name}: missing")
    return problems
