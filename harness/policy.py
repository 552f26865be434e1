"""The release policy and sign-offs (docs/releasing.md).

``release-policy.yaml`` at the project root names the roles that sign off, each with
its committed public key, and per promotion target which roles must sign (k of them)
and which artifacts are the candidate. ``harness signoff`` writes one role's signed
statement over a run's verdict and the candidate's digests, beside the bundle (the
bundle itself is sealed); ``harness promote`` counts the valid ones.

A sign-off is valid only if it opens under the key the policy commits for its role,
names that role, that run and that verdict digest, and the candidate's digests as they
are now: a statement signed by another key, for another role, run or candidate does not
count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.fsutil import sha256_file
from harness.policy_paths import POLICY_FILE
from harness.policy_paths import inside_project as _inside

SIGNOFF_TYPE = "application/vnd.harness.signoff+json"


@dataclass(frozen=True)
class Target:
    name: str
    roles: tuple[str, ...]
    k: int
    candidate: tuple[str, ...]
    criteria: tuple[str, ...] | None = None  # None: every blocker of the contract set
    # (line, col) of each of ``criteria`` in the policy file, for lint
    criteria_at: tuple[tuple[int, int], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ReleasePolicy:
    path: Path
    root: Path
    roles: dict[str, Path]
    targets: dict[str, Target]
    audit_log: Path | None = None  # the model's lifecycle audit log

    def target(self, name: str) -> Target:
        if name not in self.targets:
            raise UsageError(
                f"{self.path}: no target {name!r} (targets: {', '.join(sorted(self.targets))}); "
                f"add it under 'targets:' or promote to one of those"
            )
        return self.targets[name]


def _schema() -> dict[str, Any]:
    text = (Path(__file__).parent / "schema" / "release-policy-v1.json").read_text()
    return dict(json.loads(text))


def load_policy(path: Path, root: Path) -> ReleasePolicy:
    """Read and check ``path``; every problem is one line naming the file, the line and
    what to change."""
    from jsonschema import Draft202012Validator

    from harness.yamlsrc import YamlSourceError, load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the release policy ({exc.strerror})") from None
    try:
        data, positions = load_yaml(text)
    except YamlSourceError as exc:
        hint = f" (hint: {exc.hint})" if exc.hint else ""
        raise UsageError(f"{path}:{exc.line}:{exc.col}: {exc.message}{hint}") from None
    errors = sorted(
        Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.absolute_path)
    )
    if errors:
        err = errors[0]
        line, col = positions.of(tuple(err.absolute_path))
        where = ".".join(str(p) for p in err.absolute_path) or "the document"
        raise UsageError(f"{path}:{line}:{col}: {where}: {err.message}")
    from harness.signing import keyid_of, load_public_key

    roles = {name: root / key for name, key in data["roles"].items()}
    holders: dict[str, str] = {}
    for name, key in roles.items():
        line, col = positions.of(("roles", name))
        where = f"{path}:{line}:{col}: roles.{name}"
        if not _inside(root, key) or not key.is_file():
            raise UsageError(
                f"{where}: public key {key} does not exist inside the project; commit the "
                "role's public key there (harness keygen writes KEY.pub)"
            )
        keyid = keyid_of(load_public_key(key))
        if keyid in holders:
            raise UsageError(
                f"{where}: the same key as role {holders[keyid]}: each role needs its own "
                "key, or one person fills two roles"
            )
        holders[keyid] = name
    targets = {}
    for name, spec in data["targets"].items():
        signoffs = spec["signoffs"]
        unknown = [r for r in signoffs["roles"] if r not in roles]
        k = int(signoffs.get("k", len(signoffs["roles"])))
        line, col = positions.of(("targets", name))
        if unknown:
            raise UsageError(
                f"{path}:{line}:{col}: targets.{name}: role {unknown[0]!r} is not under "
                f"'roles:' (roles: {', '.join(sorted(roles))})"
            )
        if k > len(signoffs["roles"]):
            raise UsageError(
                f"{path}:{line}:{col}: targets.{name}: k is {k} but only "
                f"{len(signoffs['roles'])} roles may sign; lower k or add a role"
            )
        for rel in spec["candidate"]:
            if not _inside(root, root / rel):
                raise UsageError(
                    f"{path}:{line}:{col}: targets.{name}.candidate: {rel} is outside the "
                    "project or a symbolic link; name a path inside it"
                )
        criteria = tuple(spec["criteria"]) if "criteria" in spec else None
        criteria_at = tuple(
            positions.of(("targets", name, "criteria", i)) for i in range(len(criteria or ()))
        )
        targets[name] = Target(
            name, tuple(signoffs["roles"]), k, tuple(spec["candidate"]), criteria, criteria_at
        )
    audit_log = None
    if "audit-log" in data:
        audit_log = root / data["audit-log"]
        if not _inside(root, audit_log):
            line, col = positions.of(("audit-log",))
            raise UsageError(
                f"{path}:{line}:{col}: audit-log: {data['audit-log']} is outside the project "
                "or a symbolic link; name a path inside it"
            )
    return ReleasePolicy(path, root, roles, targets, audit_log)


def find_policy(root: Path) -> ReleasePolicy | None:
    path = root / POLICY_FILE
    return load_policy(path, root) if path.exists() else None


# --------------------------------------------------------------------------- candidate


def artifact_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (each relative path and its sha256,
    in sorted order): a checkpoint directory, sharded or not, is one digest."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise UsageError(f"{path}: the candidate artifact does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def weights_files(path: Path) -> list[Path]:
    """The weights files of a candidate artifact: the file itself, or every
    ``*.safetensors`` under a folder but the optimizer state."""
    if path.is_file():
        return [path]
    found = sorted(path.rglob("*.safetensors")) if path.is_dir() else []
    return [f for f in found if f.name != "optimizer.safetensors"]


def stamped_purpose(path: Path) -> set[str]:
    """The ``purpose`` of each weights file under ``path`` (its safetensors header's
    ``__metadata__``), "unstamped" for one that says none. A release candidate must say
    ``ship`` and nothing else."""
    files = weights_files(path)
    if not files:
        return {"no weights file"}  # an empty folder, or weights in another format
    found = set()
    for f in files:
        purpose = "unstamped"
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            try:
                header = json.loads(fh.read(n)) if 0 < n <= 100_000_000 else None
            except ValueError:
                header = None
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("purpose"), str):
            purpose = meta["purpose"]
        found.add(purpose)
    return found


def candidate_digests(policy: ReleasePolicy, target: Target) -> dict[str, str]:
    return {rel: artifact_digest(policy.root / rel) for rel in target.candidate}


# --------------------------------------------------------------------------- sign-offs


def signoff_path(run_dir: Path, role: str, target: str) -> Path:
    """Where a role's sign-off of a run for a target is kept: beside the sealed bundle."""
    return run_dir.parent / "signoffs" / run_dir.name / target / f"{role}.dsse.json"


def signoff_statement(
    run_dir: Path, role: str, target: str, candidate: dict[str, str]
) -> dict[str, Any]:
    from harness.fsutil import sha256_file

    verdict = json.loads((run_dir / "verdict.json").read_text())
    return {
        "type": "signoff",
        "role": role,
        "target": target,
        "run_id": verdict.get("run_id"),
        "verdict_sha256": sha256_file(run_dir / "verdict.json"),
        "candidate": dict(sorted(candidate.items())),
    }


def write_signoff(
    run_dir: Path, role: str, target: str, candidate: dict[str, str], signer: Any
) -> Path:
    from harness.fsutil import atomic_write_json
    from harness.signing import canonical_json, make_envelope

    body = canonical_json(signoff_statement(run_dir, role, target, candidate))
    path = signoff_path(run_dir, role, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, make_envelope(body, SIGNOFF_TYPE, signer))
    return path


def valid_signoffs(
    run_dir: Path, policy: ReleasePolicy, target: Target, candidate: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(roles whose sign-off holds, why each other role's does not)."""
    from harness.shapes import open_envelope_strict
    from harness.signing import canonical_json, load_public_key

    good, why = [], []
    for role in target.roles:
        path = signoff_path(run_dir, role, target.name)
        if not path.is_file():
            why.append(f"{role}: no sign-off ({path})")
            continue
        try:
            envelope = json.loads(path.read_bytes())
        except (OSError, ValueError):
            why.append(f"{role}: {path} is not JSON")
            continue
        key = load_public_key(policy.roles[role])
        opened = open_envelope_strict(envelope, [key], SIGNOFF_TYPE)
        if opened.problems or opened.payload is None:
            why.append(f"{role}: not signed by the role's key {policy.roles[role]}")
            continue
        expected = signoff_statement(run_dir, role, target.name, candidate)
        if opened.payload != canonical_json(expected):
            try:
                got = json.loads(opened.payload)
            except ValueError:
                got = {}
            diff = sorted(
                k for k in expected if not isinstance(got, dict) or got.get(k) != expected[k]
            )
            why.append(f"{role}: the signed statement differs in {', '.join(diff) or 'its shape'}")
            continue
        good.append(role)
    return good, why


# --------------------------------------------------------------------------- lifecycle


def anchors_broken(
    name: str, lines: Sequence[bytes], anchors: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Each anchor (``count``, ``head`` of the lifecycle log when an earlier promotion
    was signed, from the committed registry) must still be a prefix of the log's
    ``lines``: history before a promotion cannot be rewritten without this saying so."""
    import auditchain

    out = []
    for a in anchors:
        count, head = a.get("count"), a.get("head")
        if not isinstance(count, int) or not isinstance(head, str) or count <= 0:
            continue
        if count > len(lines) or auditchain.line_hash(lines[count - 1]) != head:
            out.append(
                f"{name}: its first {count} events no longer end in the head the "
                f"promotion of {a.get('run_id', '?')} signed (the log was rewritten)"
            )
    return out


def audited_candidate(
    policy: ReleasePolicy,
    spec: Target,
    anchors: Sequence[Mapping[str, Any]] = (),
    during_run: Mapping[str, Any] | None = None,
) -> list[str]:
    """Why the candidate's weights are not shown by the lifecycle audit log to come from
    an audited training run that data governance allowed (empty: they are).

    The log must verify; every ``*.safetensors`` file of the candidate must be named, by
    its sha256, in a ``checkpoint.write`` event, whose run's ``training.start`` names (by
    line hash) a ``data.training_decision`` event that allowed it. A checkpoint trained
    on data governance refused, trained around governance, or edited after it was
    written has no such chain of events.

    The chain alone detects edits, not a forged log (anyone who can write the file can
    append events that hash): ``anchors`` (the heads earlier promotions signed) fix the
    history before each promotion, and ``during_run`` (the log's state at the start and
    the end of the readiness run, recorded by the coordinator) refuses a log that
    something the run started, a check, wrote to."""
    import auditchain

    log = policy.audit_log
    if log is None:
        return []
    try:  # read once: what is verified is what is judged
        data = log.read_bytes()
    except OSError as exc:
        return [f"{log}: cannot read: {exc.strerror}"]
    if len(data) > auditchain.MAX_LOG:
        return [f"{log}: larger than the {auditchain.MAX_LOG >> 20} MiB an audit log may have"]
    _, _, problems = auditchain.verify_lines(data)
    if problems:
        return [f"{log}: {problems[0]}"]
    raw = data.split(b"\n")[:-1]  # it verified: every line ends with a newline
    rewritten = anchors_broken(log.name, raw, anchors)
    if rewritten:
        return rewritten
    if during_run is not None and during_run.get("before") != during_run.get("after"):
        return [
            f"{log.name} changed during the readiness run ({during_run.get('before')} -> "
            f"{during_run.get('after')}): something the run started (a check) wrote to it"
        ]
    events = [json.loads(line) for line in raw]
    allowed = {
        auditchain.line_hash(line)
        for line, e in zip(raw, events, strict=True)
        if e.get("event") == "data.training_decision" and e.get("decision") == "allowed"
    }
    governed = {
        str(e.get("run")) for e in events
        if e.get("event") == "training.start" and e.get("governance") in allowed
    }  # fmt: skip
    written: dict[str, str] = {}  # weights sha256 -> the run that wrote it
    for e in events:
        files = e.get("files") if e.get("event") == "checkpoint.write" else None
        if isinstance(files, dict):
            for digest in files.values():
                written.setdefault(str(digest), str(e.get("run")))
    out: list[str] = []
    for rel in spec.candidate:
        weights = weights_files(policy.root / rel)
        if not weights:
            out.append(f"{rel}: no weights file (*.safetensors) to link to a checkpoint event")
        for f in weights:
            name = f.relative_to(policy.root).as_posix()
            run = written.get(sha256_file(f))
            if run is None:
                out.append(
                    f"{name}: no checkpoint.write event in {log.name} names its bytes "
                    "(not written by an audited training run, or changed since)"
                )
            elif run not in governed:
                out.append(
                    f"{name}: its training run ({run}) started without a data "
                    "governance decision that allowed its datasets"
                )
    return out
