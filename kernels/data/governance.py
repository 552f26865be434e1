"""Data governance: may these datasets be trained on? Every answer is an audit event.

``authorize_training(names, manifest=, policy=, approvals=, audit=)`` checks each
dataset, in order:

1. it is in the manifest and its file's sha256 matches (``dataset_path``);
2. the data-use policy (``datasets/policy.yaml``) does not deny its name, license
   or source, and allows both its license and its source (anything no allow rule
   covers is refused);
3. it carries no PII, or an approval for exactly this content exists: a dataset is
   PII-flagged when its manifest says ``pii: true`` or when the PII scanner
   (``kernels.data.pii``) finds anything in its file now; an approval is a
   ``data.pii_approval`` event for the dataset's current sha256 in an audit log
   whose hash chain verifies (``approve_pii`` writes one).

The decision (allowed or refused, with the rule and the reason) is appended to the
hash-chained lifecycle audit log (``kernels.lifecycle``) before ``authorize_training``
returns a :class:`Decision` or raises :class:`GovernanceError` (one line: which
dataset, which rule, what to do).

Defaults: ``policy`` is ``$KERNELS_DATA_POLICY`` or ``datasets/policy.yaml``;
``audit`` is ``$KERNELS_AUDIT_LOG`` or ``evidence/lifecycle/audit.jsonl``;
``approvals`` (log files to read approvals from) defaults to the audit log.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import auditchain as _audit
from kernels import lifecycle as _lifecycle
from kernels.data.manifest import (
    DatasetEntry,
    DatasetError,
    Manifest,
    dataset_entry,
    dataset_path,
    datasets_root,
    load_manifest,
    sha256_file,
)
from kernels.errors import KernelsError

__all__ = [
    "GovernanceError",
    "PolicyError",
    "Policy",
    "Refusal",
    "Decision",
    "DECISION_EVENT",
    "APPROVAL_EVENT",
    "default_policy_path",
    "default_audit_path",
    "load_policy",
    "policy_check",
    "scan_dataset",
    "pii_status",
    "pii_gate",
    "approve_pii",
    "approvals_for",
    "decide",
    "authorize_training",
]

DECISION_EVENT = "data.training_decision"
APPROVAL_EVENT = "data.pii_approval"


class GovernanceError(KernelsError, ValueError):
    """Training on these datasets is refused (policy, PII without approval, digest).
    ``.decision`` holds the refused :class:`Decision`."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class PolicyError(KernelsError, ValueError):
    """The policy file is missing, does not parse or is malformed."""


# ------------------------------------------------------------------ policy
_SECTIONS = {"datasets": ("deny",), "licenses": ("allow", "deny"), "sources": ("allow", "deny")}


@dataclass(frozen=True)
class Policy:
    path: Path
    sha256: str
    deny_datasets: tuple[str, ...]
    allow_licenses: tuple[str, ...]
    deny_licenses: tuple[str, ...]
    allow_sources: tuple[str, ...]
    deny_sources: tuple[str, ...]


def default_policy_path() -> Path:
    env = os.environ.get("KERNELS_DATA_POLICY")
    return Path(env) if env else datasets_root() / "policy.yaml"


def default_audit_path() -> Path:
    """The model's lifecycle audit log (``kernels.lifecycle.audit_path``)."""
    return _lifecycle.audit_path()


def _line_of(text: str, path: tuple[str | int, ...]) -> int:
    """1-based line of the key or list item at ``path`` in a policy (``("licenses",
    "allow", 3)``), or of the deepest part of it that exists (1 for none). Only the
    path is followed, so anchors and aliases cost nothing."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        keys = yaml.SafeLoader("")  # builds each key as safe_load does (yes: True)
        line = 1
        for step in path:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and keys.construct_object(key) == step:
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
                if step >= len(node.value):
                    return line
                node = node.value[step]
                line = node.start_mark.line + 1
            else:
                return line
        return line
    except (yaml.YAMLError, RecursionError, TypeError):
        return 1


def load_policy(path: str | Path | None = None) -> Policy:
    """Parse and validate a policy file; unknown keys are errors, never ignored.

    Each error is one line naming the file, the line and what to change."""
    p = Path(path) if path is not None else default_policy_path()
    if not p.is_file():
        raise PolicyError(
            f"policy {p} not found: create it (datasets/policy.yaml shows the format) "
            "or point KERNELS_DATA_POLICY at one"
        )
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PolicyError(f"policy {p}:{line}: is not UTF-8 text; save it as UTF-8") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            line = mark.line + 1
        elif isinstance(e, yaml.reader.ReaderError):  # a control character: no mark
            line = text[: e.position].count("\n") + 1
        else:
            line = 1
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or type(e).__name__
        raise PolicyError(f"policy {p}:{line}: does not parse: {problem}; fix the YAML") from None
    if not isinstance(doc, dict):
        raise PolicyError(
            f"policy {p}:1: must be a mapping with 'version' and the sections "
            f"{', '.join(_SECTIONS)}"
        )

    def fail(path: tuple[str | int, ...], message: str) -> PolicyError:
        return PolicyError(f"policy {p}:{_line_of(text, path)}: {message}")

    unknown = sorted(set(doc) - {"version", *_SECTIONS}, key=str)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise fail(
            (unknown[0],),
            f"unknown key {_short(unknown[0])}{more}; the keys are 'version', "
            f"{', '.join(repr(s) for s in _SECTIONS)}: rename or remove it",
        )
    lists: dict[str, tuple[str, ...]] = {}
    for section, kinds in _SECTIONS.items():
        sec = doc.get(section) or {}
        have = " and ".join(f"'{k}'" for k in kinds)
        if not isinstance(sec, dict):
            raise fail(
                (section,),
                f"'{section}' must be a mapping with {have} lists (got {_short(sec)})",
            )
        extra = sorted(set(sec) - set(kinds), key=str)
        if extra:
            raise fail(
                (section, extra[0]),
                f"'{section}' may only have {have} (got {_short(extra[0])}): rename or remove it",
            )
        for kind in kinds:
            key = f"{section}.{kind}"
            items = sec.get(kind) or []
            if not isinstance(items, list):
                raise fail((section, kind), f"'{key}' must be a list of patterns (got "
                                            f"{_short(items)}); write each pattern on its own "
                                            "'- ' line")  # fmt: skip
            for i, x in enumerate(items):
                if not isinstance(x, str) or not x:
                    raise fail((section, kind, i), f"'{key}' item {i + 1} must be a non-empty "
                                                   f"pattern string (got {_short(x)}); quote "
                                                   "it")  # fmt: skip
            lists[f"{kind}_{section}"] = tuple(items)
    return Policy(path=p, sha256=sha256_file(p), **lists)


def _short(value: Any) -> str:
    """A value for a one-line message: repr, at most ~60 characters, no line breaks."""
    return reprlib.repr(value).replace("\n", "\\n")


def _match(value: str, patterns: Iterable[str]) -> str | None:
    v = value.casefold()
    for pat in patterns:
        if fnmatch.fnmatchcase(v, pat.casefold()):
            return pat
    return None


@dataclass(frozen=True)
class Refusal:
    dataset: str
    rule: str
    reason: str


def policy_check(entry: DatasetEntry, policy: Policy) -> Refusal | None:
    """The first policy rule that refuses ``entry`` (deny rules first), or None."""
    if (pat := _match(entry.name, policy.deny_datasets)) is not None:
        return Refusal(entry.name, f"datasets.deny {pat!r}", "is withdrawn by name")
    if (pat := _match(entry.license, policy.deny_licenses)) is not None:
        return Refusal(entry.name, f"licenses.deny {pat!r}", f"has license {entry.license!r}")
    if (pat := _match(entry.source, policy.deny_sources)) is not None:
        return Refusal(entry.name, f"sources.deny {pat!r}", f"has source {entry.source[:80]!r}")
    if _match(entry.license, policy.allow_licenses) is None:
        return Refusal(
            entry.name,
            "licenses.allow",
            f"has license {entry.license!r}, which no allow pattern covers",
        )
    if _match(entry.source, policy.allow_sources) is None:
        return Refusal(
            entry.name,
            "sources.allow",
            f"has source {entry.source[:80]!r}, which no allow pattern covers",
        )
    return None


# --------------------------------------------------------------------- PII
_SCAN_CACHE: dict[tuple[str, str], dict[str, int]] = {}


def scan_dataset(path: Path, sha256: str | None = None) -> dict[str, int]:
    """PII findings per kind in a dataset file (gzip is decompressed; bytes that are
    not UTF-8 are replaced). Cached by (path, sha256) within the process."""
    from kernels.data import pii

    key = (str(path), sha256 or sha256_file(path))
    if key not in _SCAN_CACHE:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        _SCAN_CACHE[key] = pii.summarize(pii.scan_text(raw.decode("utf-8", errors="replace")))
    return dict(_SCAN_CACHE[key])


def pii_status(entry: DatasetEntry, path: Path) -> tuple[bool, dict[str, int]]:
    """(flagged, findings): flagged when the manifest says ``pii: true`` or the scanner
    finds anything in the file."""
    findings = scan_dataset(path, entry.sha256)
    return bool(entry.pii) or any(findings.values()), findings


def approvals_for(logs: Sequence[Path]) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """Approvals ``{(dataset, sha256): event}`` from logs whose chain verifies, and the
    problems of the logs that do not (their approvals are not trusted)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    problems: list[str] = []
    for log in logs:
        _, _, probs = _audit.verify_chain(log, missing_ok=True)
        if probs:
            problems.append(f"{log}: {probs[0]}")
            continue
        for ev in _audit.read_events(log):
            if ev.get("event") == APPROVAL_EVENT:
                found[(str(ev.get("dataset")), str(ev.get("sha256")))] = ev
    return found, problems


def pii_gate(
    entry: DatasetEntry,
    flagged: bool,
    findings: dict[str, int],
    approvals: dict[tuple[str, str], dict[str, Any]],
    problems: Sequence[str],
) -> Refusal | None:
    """Refuse a PII-flagged dataset unless its current content has an approval."""
    if not flagged:
        return None
    if (entry.name, entry.sha256) in approvals:
        return None
    what = ", ".join(f"{k}={v}" for k, v in findings.items() if v) or "manifest pii: true"
    extra = f"; approval logs not trusted: {problems[0]}" if problems else ""
    return Refusal(
        entry.name,
        "pii.approval",
        f"is PII-flagged ({what}) with no approval for sha256 {entry.sha256[:12]}... "
        f"in the audit log (record one with approve_pii){extra}",
    )


def approve_pii(
    name: str,
    *,
    approver: str,
    reason: str,
    audit: str | Path | None = None,
    manifest: Manifest | str | Path | None = None,
) -> str:
    """Record an approval to train on PII-flagged ``name`` as it is now (its current
    sha256); returns the new audit head."""
    if not approver or not reason:
        raise ValueError("an approval needs an 'approver' and a 'reason'")
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    entry = dataset_entry(name, m)
    dataset_path(name, verify=True, manifest=m)
    return _record(
        Path(audit) if audit is not None else default_audit_path(),
        APPROVAL_EVENT,
        dataset=name,
        sha256=entry.sha256,
        approver=approver,
        reason=reason,
        manifest=str(m.path),
    )


def _record(log: Path, event: str, **data: Any) -> str:
    return _audit.append_event(log, event, **data)


# ---------------------------------------------------------------- decision
@dataclass
class Decision:
    allowed: bool
    datasets: tuple[str, ...]
    rule: str | None = None
    reason: str = ""
    refusals: list[Refusal] = field(default_factory=list)
    findings: dict[str, dict[str, int]] = field(default_factory=dict)
    audit: str = ""
    event_hash: str = ""

    def message(self) -> str:
        if self.allowed:
            return f"training on {', '.join(self.datasets)} allowed"
        r = self.refusals[0]
        more = f" (+{len(self.refusals) - 1} more refusal(s))" if len(self.refusals) > 1 else ""
        return f"training refused: dataset '{r.dataset}' {r.reason} - rule {r.rule}{more}"


def decide(
    dataset_names: Sequence[str],
    *,
    manifest: Manifest | str | Path | None = None,
    policy: Policy | str | Path | None = None,
    approvals: str | Path | Sequence[str | Path] | None = None,
    audit: str | Path | None = None,
) -> Decision:
    """Decide and record; never raises on a refusal (``authorize_training`` does)."""
    if isinstance(dataset_names, str) or not dataset_names:
        raise ValueError("'dataset_names' must be a non-empty list of dataset names")
    log = Path(audit) if audit is not None else default_audit_path()
    if approvals is None:
        logs = [log]
    elif isinstance(approvals, str | Path):
        logs = [Path(approvals)]
    else:
        logs = [Path(a) for a in approvals]
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    approved, problems = approvals_for(logs)
    names = tuple(dataset_names)
    refusals: list[Refusal] = []
    findings: dict[str, dict[str, int]] = {}
    records: list[dict[str, Any]] = []
    for name in names:
        try:
            entry = dataset_entry(name, m)
            path = dataset_path(name, verify=True, manifest=m)
        except DatasetError as e:
            refusals.append(Refusal(name, "manifest", f"fails its manifest check: {e}"))
            continue
        records.append(
            {"name": name, "sha256": entry.sha256, "license": entry.license, "pii": entry.pii}
        )
        refusal = policy_check(entry, pol)
        if refusal is not None:
            refusals.append(refusal)
            continue
        flagged, found = pii_status(entry, path)
        findings[name] = found
        refusal = pii_gate(entry, flagged, found, approved, problems)
        if refusal is not None:
            refusals.append(refusal)
    d = Decision(
        allowed=not refusals,
        datasets=names,
        rule=refusals[0].rule if refusals else None,
        refusals=refusals,
        findings=findings,
        audit=str(log),
    )
    d.reason = d.message()
    d.event_hash = _record(
        log,
        DECISION_EVENT,
        decision="allowed" if d.allowed else "refused",
        datasets=records,
        requested=list(names),
        rule=d.rule,
        reason=d.reason,
        refusals=[{"dataset": r.dataset, "rule": r.rule, "reason": r.reason} for r in refusals],
        policy=str(pol.path),
        policy_sha256=pol.sha256,
        manifest=str(m.path),
    )
    return d


def authorize_training(
    dataset_names: Sequence[str],
    *,
    manifest: Manifest | str | Path | None = None,
    policy: Policy | str | Path | None = None,
    approvals: str | Path | Sequence[str | Path] | None = None,
    audit: str | Path | None = None,
) -> Decision:
    """Allow training on ``dataset_names`` or raise :class:`GovernanceError`; either way
    the decision is an event in the audit log first."""
    d = decide(dataset_names, manifest=manifest, policy=policy, approvals=approvals, audit=audit)
    if not d.allowed:
        raise GovernanceError(d.reason, d)
    return d
