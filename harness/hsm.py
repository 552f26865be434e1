"""Signing keys held in a PKCS#11 token: an HSM, a smart card, or SoftHSM2.

``--sign-key 'pkcs11:token=NAME;object=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so'``
(an RFC 7512 URI) names an Ed25519 private key inside a token. The harness signs
with CKM_EDDSA inside the token, so the private key never leaves it. Its public
key is exported as the PEM that ``harness verify --key`` and ``[tool.harness]
allowed-keys`` take (``harness keygen --pkcs11 URI`` makes a key pair in the token
and writes it; ``harness pubkey URI`` exports an existing one).

The user PIN comes from the URI (``pin-source=FILE``, or ``pin-value=``, which is
then wiped from the process's command line) or from ``$HARNESS_PKCS11_PIN``, taken
out of the environment at start like the passphrase. A URI is only ever shown
without its PIN (``Pkcs11Uri.shown``). The PIN is not redacted from logs: no check
is given it, and a redaction would tell a check which of its guesses is the PIN.

The trust boundary is DeferredKey's: at start the library and the PKCS#11 module
are loaded (nothing is loaded into the coordinator after the checks), and a
short-lived process of its own proves the key usable: the token is there, the
PIN opens it, the object is an Ed25519 private key whose signature verifies under
its public key. The coordinator opens its own session and logs in only when the
key is called, after the last check has ended.

Needs python-pkcs11 (the ``hsm`` extra); it is imported only for a pkcs11: key.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from harness.errors import HarnessError, UsageError
from harness.procs import NEVER_PASS
from harness.signing import (
    PIN_ENV,
    PIN_VALUE,
    PKCS11_SCHEME,
    Signer,
    hide_uri_pin,
    is_pkcs11_uri,
)

#: CKA_EC_PARAMS of Ed25519: the OID 1.3.101.112, or the PrintableString "edwards25519"
ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")
_PATH_ATTRS = ("token", "manufacturer", "serial", "model", "slot-id", "object", "id", "type")
_QUERY_ATTRS = ("module-path", "pin-value", "pin-source")
_TEST_MESSAGE = b"harness: can this token key sign?"


@dataclass(frozen=True)
class Pkcs11Uri:
    """What an RFC 7512 URI asks for. ``token`` holds the token attributes to match
    (token, manufacturer, serial, model); ``label``/``key_id``: the key object."""

    shown: str  # the URI as given, with any pin-value replaced by ***
    module: str
    token: dict[str, str] = field(default_factory=dict)
    slot_id: int | None = None
    label: str | None = None
    key_id: bytes | None = None
    pin_value: str | None = field(default=None, repr=False)
    pin_source: str | None = None

    def error(self, why: str) -> UsageError:
        return UsageError(f"signing key {self.shown}: {why}")

    def what(self) -> str:
        parts = [f"object={self.label!r}"] if self.label is not None else []
        if self.key_id is not None:
            parts.append(f"id={self.key_id.hex()}")
        return " ".join(parts) or "(any)"


def redact_uri(text: str) -> str:
    return PIN_VALUE.sub(r"\1***", text)


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse ``pkcs11:PATH?QUERY`` (RFC 7512). Unknown or repeated attributes are
    refused, so a typo never widens what the URI matches."""
    shown = redact_uri(text)
    if not is_pkcs11_uri(text):
        raise UsageError(f"signing key {shown}: not a pkcs11: URI")
    path, _, query = text[len(PKCS11_SCHEME) :].partition("?")
    attrs: dict[str, str] = {}
    for part, sep, known in ((path, ";", _PATH_ATTRS), (query, "&", _QUERY_ATTRS)):
        for item in part.split(sep) if part else ():
            name, eq, value = item.partition("=")
            if not eq:
                raise UsageError(f"signing key {shown}: {item!r} is not NAME=VALUE")
            if name not in known:
                raise UsageError(
                    f"signing key {shown}: unsupported attribute {name!r} "
                    f"(supported: {', '.join(_PATH_ATTRS + _QUERY_ATTRS)})"
                )
            if name in attrs:
                raise UsageError(f"signing key {shown}: {name} is given twice")
            attrs[name] = value
    if "module-path" not in attrs:
        raise UsageError(
            f"signing key {shown}: name the PKCS#11 module with ?module-path=/path/to/module.so"
        )
    if attrs.get("type", "private") != "private":
        raise UsageError(f"signing key {shown}: type={attrs['type']}: a signing key is private")
    if "object" not in attrs and "id" not in attrs:
        raise UsageError(f"signing key {shown}: name the key with object=LABEL (or id=)")
    slot_id = None
    if "slot-id" in attrs:
        try:
            slot_id = int(unquote(attrs["slot-id"]))
        except ValueError as exc:
            raise UsageError(f"signing key {shown}: slot-id must be a number") from exc
    return Pkcs11Uri(
        shown=shown,
        module=unquote(attrs["module-path"]),
        token={
            k: unquote(attrs[k]) for k in ("token", "manufacturer", "serial", "model") if k in attrs
        },
        slot_id=slot_id,
        label=unquote(attrs["object"]) if "object" in attrs else None,
        key_id=unquote_to_bytes(attrs["id"]) if "id" in attrs else None,
        pin_value=unquote(attrs["pin-value"]) if "pin-value" in attrs else None,
        pin_source=unquote(attrs["pin-source"]) if "pin-source" in attrs else None,
    )


def resolve_pin(uri: Pkcs11Uri, env_pin: str | None) -> str | None:
    """pin-value=, else the file pin-source= names, else $HARNESS_PKCS11_PIN."""
    if uri.pin_value is not None:
        return uri.pin_value
    if uri.pin_source is not None:
        source = uri.pin_source.removeprefix("file:")
        try:
            return Path(source).read_text().rstrip("\r\n")
        except OSError as exc:
            raise uri.error(f"cannot read pin-source {source}: {exc.strerror}") from exc
    return env_pin


def _pkcs11(uri: Pkcs11Uri) -> Any:
    try:
        import pkcs11
    except ImportError as exc:
        raise uri.error(
            "a pkcs11: key needs the python-pkcs11 library (pip install 'ml-contract-harness[hsm]')"
        ) from exc
    return pkcs11


def load_module(uri: Pkcs11Uri) -> Any:
    """Load (dlopen and C_Initialize) the URI's PKCS#11 module."""
    p11 = _pkcs11(uri)
    if not os.path.isfile(uri.module):
        raise uri.error(f"PKCS#11 module {uri.module} not found (is it installed?)")
    try:
        return p11.lib(uri.module)
    except p11.PKCS11Error as exc:
        raise uri.error(f"cannot load the PKCS#11 module {uri.module}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def find_token(lib: Any, uri: Pkcs11Uri) -> Any:
    import pkcs11

    seen, matches = [], []
    for slot in lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except pkcs11.PKCS11Error:
            continue
        if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
            continue
        seen.append(repr(token.label))
        serial = token.serial
        info = {
            "token": token.label,
            "manufacturer": token.manufacturer_id,
            "model": token.model,
            "serial": serial.decode(errors="replace") if isinstance(serial, bytes) else serial,
        }
        if uri.slot_id is not None and slot.slot_id != uri.slot_id:
            continue
        if all(info[k] == v for k, v in uri.token.items()):
            matches.append(token)
    if not matches:
        want = " ".join(f"{k}={v!r}" for k, v in uri.token.items()) or "any token"
        raise uri.error(
            f"no token matches {want} in {uri.module} (tokens: {', '.join(seen) or 'none'})"
        )
    if len(matches) > 1:
        raise uri.error(f"{len(matches)} tokens match; name one with token= or serial=")
    return matches[0]


def open_session(token: Any, pin: str | None, uri: Pkcs11Uri, *, rw: bool = False) -> Any:
    """A session logged in as the user (or sharing this process's login)."""
    import pkcs11

    if pin is None:
        if token.flags & pkcs11.TokenFlag.LOGIN_REQUIRED:
            raise uri.error(
                f"token {token.label!r} needs its user PIN: set ${PIN_ENV} "
                "(or pin-source=FILE in the URI)"
            )
        return token.open(rw=rw)
    try:
        return token.open(rw=rw, user_pin=pin)
    except pkcs11.UserAlreadyLoggedIn:  # another session of this process logged in
        return token.open(rw=rw)
    except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as exc:
        raise uri.error(f"wrong PIN for token {token.label!r}") from exc
    except pkcs11.PinLocked as exc:
        raise uri.error(f"the user PIN of token {token.label!r} is locked") from exc
    except pkcs11.PKCS11Error as exc:
        raise uri.error(f"cannot log in to token {token.label!r}: {_why(exc)}") from exc


def private_key(session: Any, uri: Pkcs11Uri) -> Any:
    """The one private key the URI names; refused unless it is Ed25519."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    attrs: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if uri.label is not None:
        attrs[Attribute.LABEL] = uri.label
    if uri.key_id is not None:
        attrs[Attribute.ID] = uri.key_id
    found = list(session.get_objects(attrs))
    label = session.token.label
    if not found:
        raise uri.error(f"token {label!r} has no private key {uri.what()}")
    if len(found) > 1:
        raise uri.error(f"{len(found)} private keys in token {label!r} match {uri.what()}; add id=")
    key = found[0]
    try:
        kind = KeyType(key[Attribute.KEY_TYPE])
        params = bytes(key[Attribute.EC_PARAMS]) if kind is KeyType.EC_EDWARDS else b""
    except (ValueError, pkcs11.PKCS11Error):
        kind, params = None, b""
    if kind is not KeyType.EC_EDWARDS or params not in ED25519_PARAMS:
        if kind is KeyType.EC_EDWARDS:
            name = "Ed448 or another Edwards curve"
        else:
            name = kind.name if kind is not None else "of an unknown key type"
        raise uri.error(f"{uri.what()} in token {label!r} is not an Ed25519 key (it is {name})")
    return key


def public_bytes(session: Any, key: Any, uri: Pkcs11Uri) -> bytes:
    """The raw 32-byte public key of ``key``, from the public key object beside it
    (same CKA_ID, or same label when the key has no id)."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    attrs: dict[Any, Any] = {
        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
    }
    key_id = bytes(key[Attribute.ID])
    if key_id:
        attrs[Attribute.ID] = key_id
    else:
        attrs[Attribute.LABEL] = key[Attribute.LABEL]
    found = list(session.get_objects(attrs))
    if len(found) != 1:
        raise uri.error(
            f"{len(found)} public key objects beside {uri.what()} "
            "(need exactly one to export the public key; give keys distinct id=)"
        )
    return ec_point_bytes(bytes(found[0][Attribute.EC_POINT]), uri)


def ec_point_bytes(point: bytes, uri: Pkcs11Uri) -> bytes:
    """CKA_EC_POINT of an Ed25519 key: a DER OCTET STRING of 32 bytes, or (some
    tokens) the 32 bytes bare."""
    if len(point) == 34 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == 32:
        return point
    raise uri.error(f"unexpected CKA_EC_POINT of {len(point)} bytes for an Ed25519 key")


# --------------------------------------------------------------------------- signing


class TokenPrivateKey:
    """The private half of a token key, as ``Signer`` uses a key: ``sign`` asks the
    token (CKM_EDDSA) and checks the signature under the exported public key."""

    def __init__(self, session: Any, key: Any, public: bytes, uri: Pkcs11Uri) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self._key = key
        self._public = Ed25519PublicKey.from_public_bytes(public)
        self._uri = uri
        weakref.finalize(self, _close_quietly, session)

    def public_key(self) -> Any:
        return self._public

    def sign(self, data: bytes) -> bytes:
        import pkcs11
        from cryptography.exceptions import InvalidSignature

        try:
            sig = bytes(self._key.sign(data, mechanism=pkcs11.Mechanism.EDDSA))
        except pkcs11.PKCS11Error as exc:
            raise self._uri.error(f"the token refused to sign (CKM_EDDSA): {_why(exc)}") from exc
        try:
            self._public.verify(sig, data)
        except InvalidSignature as exc:
            raise self._uri.error(
                "the token's signature does not verify under its public key"
            ) from exc
        return sig


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except Exception:  # the process may be finalizing the module already
        pass


def open_signer(lib: Any, uri: Pkcs11Uri, pin: str | None) -> tuple[Signer, bytes]:
    """Log in and return (a Signer on the token key, its raw public key)."""
    token = find_token(lib, uri)
    session = open_session(token, pin, uri)
    try:
        key = private_key(session, uri)
        public = public_bytes(session, key, uri)
    except BaseException:
        _close_quietly(session)
        raise
    return Signer(TokenPrivateKey(session, key, public, uri)), public


class TokenKey:
    """A signing key in a PKCS#11 token, logged in to only when called: after the
    last check has ended (the counterpart of ``harness.signing.DeferredKey``).

    Now: python-pkcs11 and cryptography are imported, the PIN is read (a
    pin-source file a check swaps later changes nothing), and the module is
    loaded and initialised, with no session open. ``check()`` proves the key
    usable in a short-lived process of its own."""

    def __init__(self, uri: str | Pkcs11Uri, pin: str | None = None) -> None:
        from cryptography.exceptions import InvalidSignature  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401

        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        if isinstance(uri, str):  # a pin-value= on our command line: wipe it from /proc
            hide_uri_pin(uri)
        self._pin = resolve_pin(self.uri, pin)
        self._lib = load_module(self.uri)
        self.public: bytes | None = None

    @property
    def keyid(self) -> str | None:
        return hashlib.sha256(self.public).hexdigest() if self.public else None

    def check(self) -> None:
        """In a process of its own: find the token and the key, log in, sign a test
        message and verify it. Raises a one-line UsageError; keeps the public key."""
        root = str(Path(__file__).resolve().parent.parent)
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            "from harness.hsm import _check_main; _check_main()"
        )
        env = {k: v for k, v in os.environ.items() if k not in NEVER_PASS}
        fields = asdict(self.uri) | {"key_id": _hex(self.uri.key_id)}
        request = json.dumps({"uri": fields, "pin": self._pin})
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", code],
                input=request.encode(),
                capture_output=True,
                env=env,
                cwd="/",
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self.uri.error(f"cannot check it: {exc}") from exc
        try:
            answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise self.uri.error(f"the key check failed: {tail[0]}") from None
        if "error" in answer:
            raise UsageError(str(answer["error"]))
        self.public = bytes.fromhex(answer["public"])

    def __call__(self) -> Signer:
        """Log in and return a Signer that has just signed a test message. Whatever
        goes wrong (a token removed or damaged since the start: a check can write its
        files) is one HarnessError, raised before the caller writes any envelope, so
        the bundle is sealed unsigned and says so."""
        try:
            signer, public = open_signer(self._lib, self.uri, self._pin)
            if self.public is not None and public != self.public:
                raise self.uri.error("the key in the token is not the one checked at the start")
            signer.sign(_TEST_MESSAGE)  # CKM_EDDSA still works and verifies
        except HarnessError:
            raise
        except Exception as exc:  # a pkcs11.PKCS11Error, or a module misbehaving
            raise self.uri.error(f"the token failed at signing time: {_why(exc)}") from exc
        return signer


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def _check_main() -> None:
    """``TokenKey.check``'s process: stdin is {"uri": ..., "pin": ...}; prints
    {"public": HEX} or {"error": LINE}."""
    from harness.errors import HarnessError

    request = json.loads(sys.stdin.read())
    fields = dict(request["uri"])
    fields["key_id"] = bytes.fromhex(fields["key_id"]) if fields["key_id"] is not None else None
    uri = Pkcs11Uri(**fields)
    try:
        lib = load_module(uri)
        signer, public = open_signer(lib, uri, request["pin"])
        signer.sign(_TEST_MESSAGE)  # CKM_EDDSA works, and verifies under the public key
        answer: dict[str, str] = {"public": public.hex()}
    except HarnessError as exc:
        answer = {"error": str(exc)}
    except Exception as exc:  # a module misbehaving: still one line
        answer = {"error": f"signing key {uri.shown}: {_why(exc)}"}
    print(json.dumps(answer), flush=True)


# --------------------------------------------------------------------------- keys


def _generate_in_token(session: Any, label: str, key_id: bytes) -> Any:
    """Generate an Ed25519 key pair inside the token (CKM_EC_EDWARDS_KEY_PAIR_GEN):
    the private key is made there, sensitive and never extractable."""
    from pkcs11 import Attribute, KeyType, MechanismFlag

    _public, private = session.generate_keypair(
        KeyType.EC_EDWARDS,
        store=True,
        label=label,
        id=key_id,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template={Attribute.EC_PARAMS: ED25519_PARAMS[0], Attribute.TOKEN: True},
        private_template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DERIVE: False,
        },
    )
    return private


def generate_token_key(uri: str | Pkcs11Uri, pin: str | None) -> bytes:
    """Make the Ed25519 key pair the URI names inside its token; return the raw
    public key. Refuses when a private key with that label (or id) exists."""
    import pkcs11

    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    if parsed.label is None:
        raise parsed.error("name the new key with object=LABEL")
    lib = load_module(parsed)
    token = find_token(lib, parsed)
    session = open_session(token, resolve_pin(parsed, pin), parsed, rw=True)
    try:
        exists: dict[Any, Any] = {
            pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
            pkcs11.Attribute.LABEL: parsed.label,
        }
        if list(session.get_objects(exists)):
            raise parsed.error(
                f"token {token.label!r} already has a key object={parsed.label!r}; "
                "refusing to make a second (export it with `harness pubkey`)"
            )
        key_id = parsed.key_id if parsed.key_id is not None else os.urandom(8)
        try:
            private = _generate_in_token(session, parsed.label, key_id)
        except pkcs11.PKCS11Error as exc:
            raise parsed.error(
                f"token {token.label!r} cannot generate an Ed25519 key: {_why(exc)}"
            ) from exc
        return public_bytes(session, private, parsed)
    finally:
        _close_quietly(session)


def public_key_pem(public: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(public).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
