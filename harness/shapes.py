"""The exact shapes of a bundle's signed documents, checked before anything reads them.

A DSSE envelope must be exactly what :func:`harness.signing.make_envelope` writes,
each signature well formed and verifying; the signed verdict, an in-toto
Statement and a criterion's manifest must match their JSON Schemas. Each check
returns problems, one line each; none raises on any input.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, validators

from harness.evidence import STATEMENT_V1, TEST_RESULT
from harness.model import Verdict, WaiverStatus
from harness.signing import keyid_of, pae

_HEX64 = re.compile(r"[0-9a-f]{64}")

# --------------------------------------------------------------------------- shapes

_DIGEST = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_VERDICTS = [v.value for v in Verdict]
_STRINGS = {"type": "array", "items": {"type": "string"}}

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "run_id",
        "verdict",
        "complete",
        "summary",
        "criteria",
        "contract_digest",
        "git",
        "seed",
        "profile",
        "audit_head",
        "audit_count",
        "run_files",
        "signed",
        "keyid",
    ],
    "properties": {
        "run_id": {"type": "string"},
        "verdict": {"enum": _VERDICTS},
        "complete": {"type": "boolean"},
        "summary": {"type": "string"},
        "criteria": {
            "type": "object",
            # a criterion ID names a folder: one path component
            "propertyNames": {"pattern": "^[^/\\\\\\x00]+$", "not": {"enum": [".", ".."]}},
            "additionalProperties": {
                "type": "object",
                "required": ["verdict", "severity", "envelope_sha256"],
                "properties": {
                    "verdict": {"enum": _VERDICTS},
                    "severity": {"type": "string"},
                    "envelope_sha256": {"anyOf": [_DIGEST, {"type": "null"}]},
                    "waiver": {"enum": [w.value for w in WaiverStatus]},
                },
            },
        },
        "contract_digest": {"type": "string"},
        "git": {
            "type": "object",
            "properties": {
                "commit": {"type": ["string", "null"]},
                "dirty": {"type": ["boolean", "null"]},
            },
        },
        "seed": {"type": "integer"},
        "profile": {"type": "string"},
        "audit_head": _DIGEST,
        "audit_count": {"type": "integer", "minimum": 0},
        "run_files": {"type": "object", "additionalProperties": _DIGEST},
        "signed": {"type": "boolean"},
        "keyid": {"anyOf": [_DIGEST, {"type": "null"}]},
    },
}

STATEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_type", "subject", "predicateType", "predicate"],
    "properties": {
        "_type": {"const": STATEMENT_V1},
        "subject": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "digest"],
                "properties": {
                    "name": {"type": "string"},
                    "digest": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
        "predicateType": {"const": TEST_RESULT},
        "predicate": {
            "type": "object",
            "required": ["result", "configuration", "passedTests", "warnedTests", "failedTests"],
            "properties": {
                "result": {"enum": ["PASSED", "WARNED", "FAILED"]},
                "configuration": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "digest"],
                        "properties": {
                            "name": {"type": "string"},
                            "digest": {
                                "type": "object",
                                "required": ["sha256"],
                                "properties": {"sha256": _DIGEST},
                            },
                        },
                    },
                },
                "passedTests": _STRINGS,
                "warnedTests": _STRINGS,
                "failedTests": _STRINGS,
            },
        },
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "required": ["sha256", "size"],
        "additionalProperties": False,
        "properties": {"sha256": _DIGEST, "size": {"type": "integer", "minimum": 0}},
    },
}

# "integer" means an int, never 3.0 (JSON Schema's default) nor True
_Strict = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: type(value) is int
    ),
)


def shape_problems(schema: dict[str, Any], value: Any, limit: int = 12) -> list[str]:
    """What is wrong with ``value``'s shape, one line each ("at criteria/AC-1: ...")."""
    try:
        errors = sorted(_Strict(schema).iter_errors(value), key=lambda e: [str(p) for p in e.path])
        out = []
        for err in errors[:limit]:
            at = "/".join(str(p) for p in err.absolute_path) or "the top"
            message = err.message if len(err.message) <= 160 else err.message[:160] + "…"
            out.append(f"payload at {at}: {message}")
    except RecursionError:
        return ["payload is nested too deeply to be a harness document"]
    if len(errors) > limit:
        out.append(f"payload: {len(errors) - limit} more shape problems")
    return out


# --------------------------------------------------------------------------- envelopes


@dataclass(frozen=True)
class Opened:
    """A DSSE envelope opened strictly: the payload (None when the envelope is not
    one), the keyids of its well-formed signatures, and every problem found."""

    payload: bytes | None
    keyids: tuple[str, ...]
    problems: tuple[str, ...]


def _b64(value: Any) -> bytes | None:
    """Strict, canonical base64 (one encoding per byte string), else None."""
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == value else None


def open_envelope_strict(envelope: Any, public_keys: list[Any], payload_type: str) -> Opened:
    """Open an envelope of exactly the shape :func:`harness.signing.make_envelope`
    writes. Nothing unverified can ride along: every signature entry must be
    ``{"keyid", "sig"}`` and verify, over PAE(type, payload), under the given key
    its keyid names."""
    from cryptography.exceptions import InvalidSignature

    expected = ("payload", "payloadType", "signatures")
    if not isinstance(envelope, dict) or sorted(envelope) != sorted(expected):
        got = sorted(envelope)[:6] if isinstance(envelope, dict) else type(envelope).__name__
        return Opened(None, (), (f"not a DSSE envelope: expected exactly {expected}, got {got}",))
    payload = _b64(envelope["payload"])
    ptype, sigs = envelope["payloadType"], envelope["signatures"]
    broken = []
    if payload is None:
        broken.append("payload is not canonical base64")
    if not isinstance(ptype, str):
        broken.append(f"payloadType is {type(ptype).__name__}, not a string")
    if not isinstance(sigs, list):
        broken.append(f"signatures is {type(sigs).__name__}, not a list")
    if payload is None or not isinstance(ptype, str) or not isinstance(sigs, list):
        return Opened(None, (), tuple(broken))
    problems: list[str] = []
    if ptype != payload_type:
        problems.append(f"payloadType is {ptype!r}, expected {payload_type!r}")
    if not sigs:
        return Opened(payload, (), (*problems, "unsigned (no signatures)"))
    keys = {keyid_of(k): k for k in public_keys}
    keyids: list[str] = []
    entries: list[str] = []
    good = 0
    for n, entry in enumerate(sigs):
        where = f"signatures[{n}]"
        if not isinstance(entry, dict) or sorted(entry) != ["keyid", "sig"]:
            entries.append(f"{where}: malformed (expected an object with exactly keyid and sig)")
            continue
        keyid, sig = entry["keyid"], _b64(entry["sig"])
        if not isinstance(keyid, str) or not _HEX64.fullmatch(keyid):
            entries.append(f"{where}: keyid is not a lower-case sha256 hex digest")
            continue
        if sig is None or len(sig) != 64:
            entries.append(f"{where}: sig is not a canonical base64 Ed25519 signature")
            continue
        keyids.append(keyid)
        key = keys.get(keyid)
        if key is None:
            entries.append(f"{where}: by key {keyid[:16]}…, which is none of the given keys")
            continue
        try:
            key.verify(sig, pae(ptype, payload))
            good += 1
        except InvalidSignature:
            entries.append(f"{where}: does not verify with key {keyid[:16]}…")
    if not good:
        problems.append("no signature verifies with the given key(s)")
    return Opened(payload, tuple(keyids), (*problems, *entries))
