"""``harness verify RUN_DIR --key PUB.pem``: check a bundle as a skeptical auditor.

A bundle is input, and hostile until a signature or a digest covers it. verify
lists the folder itself (never trusting a listing inside it) and accepts only
what is covered:

- ``verdict.dsse.json``: exactly the envelope the writer writes (its shape, its
  bytes, every signature well formed and verifying under a given key);
- ``verdict.json``: the signed payload, byte for byte;
- ``audit.jsonl``: a chain whose head and length are in the signed verdict;
- the run files (``run.json``, ``results.json``, ``contracts/...``): a sha256
  each in the signed verdict;
- ``criteria/<ID>/``: its ``statement.dsse.json`` by a sha256 in the signed
  verdict, ``statement.json`` as its payload, ``manifest.json`` by a digest in
  the statement, and every other file, at any depth, by the manifest.

Anything else (a dotfile, a file in an unexpected folder, a link, an empty
folder) is a problem. Payloads of the wrong shape are problems too: verify
never raises on what a bundle holds. Every problem names its path; signature
problems come first. Needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from auditchain import verify_chain
from harness.evidence import MARKER, RUN_FILES, build_manifest, statement_result
from harness.fsutil import dumps_json, sha256_file
from harness.shapes import (
    MANIFEST_SCHEMA,
    STATEMENT_SCHEMA,
    VERDICT_SCHEMA,
    Opened,
    open_envelope_strict,
    shape_problems,
)
from harness.signing import STATEMENT_TYPE, VERDICT_TYPE, canonical_json

RUN_SEALS = ("verdict.json", "verdict.dsse.json", "audit.jsonl")
MAX_DOCUMENT = 128 << 20  # a JSON document of a bundle larger than this is refused unread
UNREAD: Any = object()  # a document that could not be read or parsed (already reported)

# --------------------------------------------------------------------------- findings


def _printable(text: str) -> str:
    """Control characters and undecodable bytes of hostile names, escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class _Findings:
    """Problems in two lists: signature problems first, then the rest."""

    def __init__(self) -> None:
        self.signatures: list[str] = []
        self.others: list[str] = []

    def sig(self, path: Path, problem: str) -> None:
        self.signatures.append(f"{path}: {problem}")

    def add(self, path: Path, problem: str) -> None:
        self.others.append(f"{path}: {problem}")

    def result(self) -> list[str]:
        return [_printable(p) for p in dict.fromkeys([*self.signatures, *self.others])]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file of the bundle (None: it is one)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None if stat.S_ISREG(mode) else f"is {_kind(mode)}, not a regular file"


def _read(path: Path, found: _Findings, *, signature: bool = False) -> bytes | None:
    """The bytes of a bundle document, or None with the reason recorded."""
    why = _not_regular(path)
    if why is None:
        with open(path, "rb") as fh:
            data = fh.read(MAX_DOCUMENT + 1)
        if len(data) <= MAX_DOCUMENT:
            return data
        why = f"larger than the {MAX_DOCUMENT >> 20} MiB a bundle document may have"
    (found.sig if signature else found.add)(path, why)
    return None


def _parse(data: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(data), None
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON ({str(exc)[:120]})"


def _read_json(path: Path, found: _Findings) -> Any:
    """The JSON document at ``path`` (``null`` is a document), or UNREAD."""
    data = _read(path, found)
    if data is None:
        return UNREAD
    value, why = _parse(data)
    if why:
        found.add(path, why)
        return UNREAD
    return value


def _open_file(path: Path, keys: list[Any], payload_type: str, found: _Findings) -> Opened | None:
    """Read and strictly open the envelope at ``path``; every problem is a signature problem."""
    raw = _read(path, found, signature=True)
    if raw is None:
        return None
    envelope, why = _parse(raw)
    if why:
        found.sig(path, why)
        return None
    opened = open_envelope_strict(envelope, keys, payload_type)
    for p in opened.problems:
        found.sig(path, p)
    if opened.payload is not None and raw != dumps_json(envelope).encode():
        found.sig(
            path,
            "not the bytes the harness writes for this envelope "
            "(spacing, key order, escapes or a duplicate key differ)",
        )
    return opened


def _payload_json(path: Path, payload: bytes, found: _Findings) -> Any:
    """The signed payload as JSON (or UNREAD); it must be canonical JSON, as the
    harness signs it."""
    value, why = _parse(payload)
    if why:
        found.add(path, f"payload is {why}")
        return UNREAD
    try:
        canonical = canonical_json(value) == payload
    except (ValueError, TypeError, RecursionError):
        canonical = False
    if not canonical:
        found.add(path, "payload is not canonical JSON (sorted keys, no spaces, UTF-8)")
    return value


def _safe_rel(name: str) -> bool:
    parts = name.split("/")
    return "\x00" not in name and all(p not in ("", ".", "..") for p in parts)


def _entries(root: Path, found: _Findings) -> list[tuple[str, str | None]]:
    """Every file and empty folder under ``root``, links not followed: (posix path,
    None for a regular file, else what it is)."""
    out: list[tuple[str, str | None]] = []
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as listing:
                children = list(listing)
        except OSError as exc:
            found.add(current, f"cannot be listed ({exc.strerror})")
            continue
        if not children and current != root:
            out.append((current.relative_to(root).as_posix(), "an empty folder"))
        for entry in children:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif entry.is_file(follow_symlinks=False):
                out.append((rel, None))
            else:
                out.append((rel, _kind(entry.stat(follow_symlinks=False).st_mode)))
    return sorted(out)


# --------------------------------------------------------------------------- the run


def verify_run(run_dir: Path, public_keys: list[Any]) -> list[str]:
    """Every problem found in the bundle; an empty list means it verifies.
    Signature problems come first. Never raises on what the bundle holds."""
    found = _Findings()
    try:
        _verify_run(run_dir, public_keys, found)
    except OSError as exc:  # a file that vanished or became unreadable while we read
        found.add(run_dir, f"verification stopped: {exc}")
    return found.result()


def _verify_run(run_dir: Path, keys: list[Any], found: _Findings) -> None:
    if not run_dir.is_dir():
        found.add(run_dir, "not a run directory")
        return
    dsse = run_dir / "verdict.dsse.json"
    opened = _open_file(dsse, keys, VERDICT_TYPE, found)
    if os.path.lexists(run_dir / MARKER):
        found.add(run_dir / MARKER, "the run is marked incomplete")
    if opened is None or opened.payload is None:
        return
    verdict_file = run_dir / "verdict.json"
    if _read(verdict_file, found) not in (None, opened.payload):
        found.add(verdict_file, "differs from the signed verdict payload")
    verdict = _payload_json(dsse, opened.payload, found)
    if verdict is UNREAD:
        return
    shape = shape_problems(VERDICT_SCHEMA, verdict)
    for p in shape:
        found.add(dsse, p)
    if shape:
        return
    if verdict["signed"] != bool(opened.keyids) or (
        verdict["signed"] and verdict["keyid"] not in opened.keyids
    ):
        found.sig(
            dsse,
            f"the verdict says signed={verdict['signed']} by key {verdict['keyid']}, "
            f"the envelope is signed by {list(opened.keyids) or 'no key'}",
        )
    if not verdict["complete"]:
        found.add(verdict_file, "the signed verdict says the run did not complete")

    run_files: dict[str, str] = verdict["run_files"]
    claimed: dict[str, dict[str, Any]] = verdict["criteria"]
    _check_run_files(run_dir, run_files, found)
    _check_listing(run_dir, run_files, claimed, found)
    _check_audit(run_dir, verdict, found)
    _check_results(run_dir, verdict, found)
    for cid, meta in sorted(claimed.items()):
        _verify_criterion(run_dir / "criteria" / cid, cid, meta, verdict, keys, found)

    # the release verdict follows from the per-criterion verdicts (a criterion whose
    # waiver held, WAIVED, blocks nothing; a criterion that is GO needs no waiver)
    for cid, meta in sorted(claimed.items()):
        if meta.get("waiver") == "active" and meta["verdict"] == "GO":
            found.add(verdict_file, f"{cid} is GO and yet says its waiver was used")
    blockers = [
        m["verdict"]
        for m in claimed.values()
        if m["severity"] == "blocker" and m.get("waiver") != "active"
    ]
    expect = next(
        (v for v in ("NO-GO", "UNPROVEN", "UNPROVEN-FAST") if v in blockers),
        "GO",
    )
    if verdict["complete"] and verdict["verdict"] != expect:
        found.add(
            verdict_file,
            f"release verdict {verdict['verdict']} does not follow from the criteria "
            f"(expected {expect})",
        )


def _check_run_files(run_dir: Path, run_files: dict[str, str], found: _Findings) -> None:
    for name in RUN_FILES:
        if name not in run_files:
            found.add(run_dir / name, "not covered by the signed verdict's run_files")
    for name, digest in sorted(run_files.items()):
        if not _safe_rel(name):
            found.add(run_dir, f"the signed verdict lists {name!r}, not a path in the bundle")
            continue
        path = run_dir / name
        why = _not_regular(path)
        if why:
            found.add(path, f"{why} (listed in the signed verdict)")
        elif sha256_file(path) != digest:
            found.add(path, "sha256 differs from the signed verdict")


def _check_listing(
    run_dir: Path, run_files: dict[str, str], claimed: dict[str, Any], found: _Findings
) -> None:
    """Everything in the folder is covered by a digest, or it is a problem."""
    entries = _entries(run_dir, found)
    strays = set()
    for rel, kind in entries:
        parts = rel.split("/")
        if parts[0] == "criteria" and len(parts) >= 2 and parts[1] not in claimed:
            strays.add(parts[1])
        if kind == "an empty folder":
            found.add(run_dir / rel, "unexpected empty folder (not covered by any digest)")
            continue
        if kind is not None:
            found.add(run_dir / rel, f"is {kind}: a bundle holds only files and folders")
            continue
        in_criterion = parts[0] == "criteria" and len(parts) >= 3 and parts[1] in claimed
        if not (in_criterion or rel in RUN_SEALS or rel == MARKER or rel in run_files):
            found.add(run_dir / rel, "unexpected file (not covered by any digest)")
    for name in sorted(strays):
        found.add(run_dir / "criteria" / name, "criterion not in the signed verdict")


def _check_audit(run_dir: Path, verdict: dict[str, Any], found: _Findings) -> None:
    audit = run_dir / "audit.jsonl"
    why = _not_regular(audit)
    if why:
        found.add(audit, why)
        return
    head, count, chain_problems = verify_chain(audit)
    for p in chain_problems:
        found.add(audit, p)
    if head != verdict["audit_head"] or count != verdict["audit_count"]:
        found.add(
            audit,
            f"head {head[:12]}… after {count} lines does not match the signed verdict "
            f"({verdict['audit_head'][:12]}… after {verdict['audit_count']} lines): "
            "truncated or altered",
        )


def _check_results(run_dir: Path, verdict: dict[str, Any], found: _Findings) -> None:
    """results.json tells the same verdicts as the signed verdict (not only its digest:
    a consistent re-sign of a mismatch is still a mismatch)."""
    path = run_dir / "results.json"
    results = _read_json(path, found)
    if results is UNREAD:
        return
    if not isinstance(results, dict):
        found.add(path, f"not a JSON object ({type(results).__name__})")
        return
    if results.get("verdict") != verdict["verdict"]:
        found.add(
            path,
            f"release verdict {results.get('verdict')!r}, the signed verdict says "
            f"{verdict['verdict']}",
        )
    if results.get("run_id") != verdict["run_id"]:
        found.add(path, f"run_id {results.get('run_id')!r} is not the signed verdict's")
    if results.get("interrupted") is not (not verdict["complete"]):
        found.add(path, "'interrupted' contradicts the signed verdict's 'complete'")
    rows = results.get("criteria")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        found.add(path, "criteria is not a list of objects")
        return
    said = [(r.get("criterion_id"), r.get("verdict"), _waiver_status(r)) for r in rows]
    ids = [cid for cid, _, _ in said]
    claimed = verdict["criteria"]
    for cid, value, waiver in said:
        if not isinstance(cid, str) or cid not in claimed:
            found.add(path, f"criterion {cid!r} is not in the signed verdict")
        elif ids.count(cid) > 1:
            found.add(path, f"criterion {cid} appears {ids.count(cid)} times")
        elif value != claimed[cid]["verdict"]:
            found.add(
                path, f"{cid} is {value!r}, the signed verdict says {claimed[cid]['verdict']}"
            )
        elif waiver != claimed[cid].get("waiver"):
            found.add(
                path,
                f"{cid}'s waiver is {waiver or 'absent'}, the signed verdict says "
                f"{claimed[cid].get('waiver') or 'absent'}",
            )
    for cid in sorted(set(claimed) - {i for i in ids if isinstance(i, str)}):
        found.add(path, f"criterion {cid} of the signed verdict is missing")


def _waiver_status(row: dict[str, Any]) -> Any:
    """The status of a results.json criterion's waiver (None without one)."""
    waiver = row.get("waiver")
    return waiver.get("status") if isinstance(waiver, dict) else waiver


# --------------------------------------------------------------------------- a criterion


def _verify_criterion(
    folder: Path,
    cid: str,
    meta: dict[str, Any],
    verdict: dict[str, Any],
    keys: list[Any],
    found: _Findings,
) -> None:
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        found.add(folder, "missing")
        return
    if not stat.S_ISDIR(mode):
        found.add(folder, f"is {_kind(mode)}, not a folder")
        return
    env_path = folder / "statement.dsse.json"
    raw = _read(env_path, found, signature=True)
    if raw is None:
        return
    if hashlib.sha256(raw).hexdigest() != meta["envelope_sha256"]:
        found.add(env_path, "envelope digest differs from the signed verdict (replaced or swapped)")
    opened = _open_file(env_path, keys, STATEMENT_TYPE, found)
    if opened is not None and opened.payload is not None:
        if _read(folder / "statement.json", found) not in (None, opened.payload):
            found.add(folder / "statement.json", "differs from the signed statement")
        statement = _payload_json(env_path, opened.payload, found)
        shape = [] if statement is UNREAD else shape_problems(STATEMENT_SCHEMA, statement)
        for p in shape:
            found.add(env_path, p)
        if statement is not UNREAD and not shape:
            _check_statement(folder, env_path, statement, cid, meta, verdict, found)
    local = _read_json(folder / "verdict.json", found)
    if local is not UNREAD and (
        not isinstance(local, dict)
        or local.get("criterion_id") != cid
        or local.get("verdict") != meta["verdict"]
        or _waiver_status(local) != meta.get("waiver")
    ):
        said = local.get("verdict") if isinstance(local, dict) else local
        waiver = _waiver_status(local) if isinstance(local, dict) else None
        if said == meta["verdict"] and waiver != meta.get("waiver"):
            said, signed = f"waiver {waiver}", f"waiver {meta.get('waiver')}"
        else:
            signed = meta["verdict"]
        found.add(
            folder / "verdict.json",
            f"says {said!r}, the signed verdict says {cid} is {signed}",
        )
    _check_manifest(folder, found)


def _check_statement(
    folder: Path,
    env_path: Path,
    statement: dict[str, Any],
    cid: str,
    meta: dict[str, Any],
    verdict: dict[str, Any],
    found: _Findings,
) -> None:
    commit = verdict["git"].get("commit")
    subjects = statement["subject"]
    if commit and not any(s["digest"].get("gitCommit") == commit for s in subjects):
        found.add(env_path, f"subject does not name the run's commit {commit[:12]}")
    predicate = statement["predicate"]
    config: dict[str, list[str]] = {}
    for c in predicate["configuration"]:
        config.setdefault(c["name"], []).append(c["digest"]["sha256"])
    for name in ("criterion.yaml", "manifest.json"):
        path = folder / name
        why = _not_regular(path)
        if why:
            found.add(path, why)
        elif config.get(name) != [sha256_file(path)]:
            found.add(path, "sha256 differs from the signed statement's configuration")
    if predicate["result"] != statement_result(meta["verdict"]):
        found.add(
            env_path,
            f"result {predicate['result']} does not match the verdict {meta['verdict']} of {cid}",
        )


def _check_manifest(folder: Path, found: _Findings) -> None:
    """Every file of the folder but its three seals is in manifest.json, and matches."""
    path = folder / "manifest.json"
    manifest = _read_json(path, found)
    if manifest is UNREAD:
        return
    shape = shape_problems(MANIFEST_SCHEMA, manifest)
    for p in shape:
        found.add(path, p.replace("payload at", "at", 1))
    if shape:
        return
    actual = build_manifest(folder)
    for rel, entry in manifest.items():
        if rel not in actual:
            found.add(folder / rel, "missing (listed in manifest.json)")
        elif actual[rel] != entry:
            found.add(folder / rel, "sha256 or size differs from manifest.json")
    for rel in sorted(set(actual) - set(manifest)):
        found.add(folder / rel, "unexpected file (not in manifest.json)")
