"""Ed25519 keys and DSSE envelopes (https://github.com/secure-systems-lab/dsse).

PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, with
LEN the decimal byte length; the signature is over PAE, never over the raw
payload. A key's ``keyid`` is the sha256 of its raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.procs import wipe_argv_value, wipe_environ_value

STATEMENT_TYPE = "application/vnd.in-toto+json"
VERDICT_TYPE = "application/vnd.harness.verdict+json"
PROMOTION_TYPE = "application/vnd.harness.promotion+json"
KEY_ENV = "HARNESS_SIGN_KEY"
PASSPHRASE_ENV = "HARNESS_SIGN_KEY_PASSPHRASE"
PIN_ENV = "HARNESS_PKCS11_PIN"  # the user PIN of a pkcs11: signing key (harness/hsm.py)
PKCS11_SCHEME = "pkcs11:"
#: a pin-value attribute of a pkcs11: URI (RFC 7512 query): group 1 the name, group 2 the PIN
PIN_VALUE = re.compile(r"(pin-value=)([^&]*)")


def is_pkcs11_uri(value: object) -> bool:
    """A --sign-key / [tool.harness] sign-key that names a key in a PKCS#11 token."""
    return isinstance(value, str) and value.startswith(PKCS11_SCHEME)


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- keys


def generate_keypair(private_path: Path, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write an Ed25519 private key (PEM, mode 0600) and its public key beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise UsageError(f"{p} exists; refusing to overwrite a key (move it away first)")
    key = Ed25519PrivateKey.generate()
    enc: Any = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private_path, 0o600)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path.write_bytes(pub)
    return private_path, public_path


class Signer:
    def __init__(self, key: Any) -> None:
        self._key = key
        self.keyid = keyid_of(key.public_key())

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data))

    def public_key(self) -> Any:
        return self._key.public_key()


def load_signer(path: Path, passphrase: bytes | None = None) -> Signer:
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read signing key {path}: {exc.strerror}") from exc
    return signer_from_pem(data, passphrase, path)


def signer_from_pem(data: bytes, passphrase: bytes | None, path: Path) -> Signer:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        raise UsageError(
            f"signing key {path} is passphrase-protected: set {PASSPHRASE_ENV}"
        ) from exc
    except ValueError as exc:
        raise UsageError(
            f"{path} is not a readable Ed25519 private key (wrong passphrase?): {exc}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 private key")
    return Signer(key)


# Run with ``python -I`` from "/": imports nothing from the project or its
# environment, only the installed cryptography. stdin: passphrase, NUL, PEM.
_CHECK_KEY = """
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
passphrase, _, pem = sys.stdin.buffer.read().partition(b"\\0")
try:
    key = serialization.load_pem_private_key(pem, password=passphrase or None)
except TypeError:
    sys.exit(2)
except ValueError:
    sys.exit(3)
sys.exit(0 if isinstance(key, Ed25519PrivateKey) else 4)
"""


def take_secret(name: str) -> str | None:
    """Remove the variable ``name`` from this process's environment and return its
    value: no process started later (a check, a command) can inherit it."""
    if name in os.environ:
        wipe_environ_value(name)  # also from what /proc/<pid>/environ shows
    return os.environ.pop(name, None) or None


def take_passphrase() -> bytes | None:
    value = take_secret(PASSPHRASE_ENV)
    return value.encode() if value else None


def take_pin() -> str | None:
    """The PKCS#11 user PIN from ``$HARNESS_PKCS11_PIN``, taken out of the environment."""
    return take_secret(PIN_ENV)


class DeferredKey:
    """A signing key decrypted only when called: after the last check has ended.

    The (encrypted) PEM is read now, so a check that deletes or swaps the key
    file changes nothing. ``check()`` proves now, in a short-lived isolated
    process, that it opens with the passphrase, so a wrong passphrase stops the
    run before any check runs; the decrypted key is never in the coordinator's
    memory while checks run. The cryptography modules signing needs are
    imported now too: nothing is imported into the coordinator after the checks
    (a check could have rewritten an importable file)."""

    def __init__(self, path: Path, passphrase: bytes | None = None) -> None:
        from cryptography.hazmat.primitives import serialization  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401

        self.path = Path(path)
        self._passphrase = passphrase
        try:
            self._pem = self.path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read signing key {self.path}: {exc.strerror}") from exc

    def check(self) -> None:
        import subprocess
        import sys

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", _CHECK_KEY],
                input=(self._passphrase or b"") + b"\0" + self._pem,
                capture_output=True,
                env=env,
                cwd="/",
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UsageError(f"signing key {self.path}: cannot check it: {exc}") from exc
        why = {
            2: f"signing key {self.path} is passphrase-protected: set {PASSPHRASE_ENV}",
            3: f"{self.path} is not a readable Ed25519 private key (wrong passphrase?)",
            4: f"{self.path} is not an Ed25519 private key",
        }
        if proc.returncode != 0:
            raise UsageError(why.get(proc.returncode, f"signing key {self.path} does not open"))

    def __call__(self) -> Signer:
        return signer_from_pem(self._pem, self._passphrase, self.path)


def load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read public key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key")
    return key


def keyid_of(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- envelopes


def make_envelope(payload: bytes, payload_type: str, signer: Signer | None) -> dict[str, Any]:
    sigs = []
    if signer is not None:
        sig = signer.sign(pae(payload_type, payload))
        sigs.append({"keyid": signer.keyid, "sig": base64.b64encode(sig).decode()})
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": sigs,
    }


def open_envelope(
    envelope: dict[str, Any], public_keys: list[Any], payload_type: str | None = None
) -> tuple[bytes, list[str]]:
    """Return (payload, problems). A problem-free result has a signature that
    verifies under one of ``public_keys`` over PAE(type, payload)."""
    from cryptography.exceptions import InvalidSignature

    problems: list[str] = []
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        ptype = envelope["payloadType"]
        sigs = envelope["signatures"]
    except (KeyError, TypeError, ValueError) as exc:
        return b"", [f"not a DSSE envelope ({exc})"]
    if payload_type and ptype != payload_type:
        problems.append(f"payloadType is {ptype!r}, expected {payload_type!r}")
    if not sigs:
        problems.append("unsigned (no signatures)")
        return payload, problems
    keys = {keyid_of(k): k for k in public_keys}
    ok = False
    for s in sigs:
        key = keys.get(s.get("keyid", ""))
        candidates = [key] if key is not None else list(keys.values())
        for k in candidates:
            try:
                k.verify(base64.b64decode(s.get("sig", "")), pae(ptype, payload))
                ok = True
            except (InvalidSignature, ValueError):
                continue
    if not ok:
        problems.append("no signature verifies with the given key(s)")
    return payload, problems


def resolve_sign_key(option: str | None, configured: Path | str | None) -> Path | str | None:
    """The signing key to use: a PEM file (a Path) or a PKCS#11 URI (a str). A
    URI's pin-value is wiped from this process's command line now, signing or not."""
    value = option or os.environ.get(KEY_ENV)
    if value:
        if is_pkcs11_uri(value):
            hide_uri_pin(value)
            return value
        return Path(value)
    return configured


def hide_uri_pin(uri: str) -> None:
    """Overwrite a pkcs11: URI's pin-value in /proc/<pid>/cmdline (every process can
    read it, checks included). Only the exact ``pin-value=PIN`` text is wiped: a
    short PIN that also occurs elsewhere on the command line leaves that alone."""
    for match in PIN_VALUE.finditer(uri):
        wipe_argv_value(match.group(2), prefix=match.group(1), ends=(b"&",))
