"""A realistic bug in how the harness makes a signing key for a PKCS#11 token.

``harness.hsm._generate_in_token`` asks the token to generate the Ed25519 pair
(CKM_EC_EDWARDS_KEY_PAIR_GEN). Not every token can, so a "portable" keygen that
makes the key with ``cryptography`` and imports it (C_CreateObject) is an easy
change to make: the import marks the key CKA_SENSITIVE and not CKA_EXTRACTABLE,
signing works, the bundle verifies. But the private key existed in this
process's memory before the token saw it, so it is no HSM-held key; the token
says so in CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE.
"""

from __future__ import annotations

from typing import Any

from harness.hsm import ED25519_PARAMS


def generate_in_software_and_import(session: Any, label: str, key_id: bytes) -> Any:
    """Make the key pair in software and import both halves into the token,
    marked sensitive and non-extractable (harness.hsm:_generate_in_token)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from pkcs11 import Attribute, KeyType, ObjectClass

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    common = {
        Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
        Attribute.TOKEN: True,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.EC_PARAMS: ED25519_PARAMS[0],
    }
    session.create_object(
        {**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.VERIFY: True}
        | {Attribute.EC_POINT: b"\x04\x20" + public}
    )
    return session.create_object(
        {
            **common,
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.VALUE: raw,
        }
    )
