"""DSSE envelopes (https://github.com/secure-systems-lab/dsse) wrapped in Sigstore bundles v0.3,
byte-compatible with what OpenSSF model-signing writes in key mode.

    bundle = sign_bundle(identity, IN_TOTO_PAYLOAD_TYPE, payload_bytes)
    payload = verify_bundle(bundle, public_pem)  # raises VerificationError

Only the signature math lives here; what the payload means is up to `signing` and `statements`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from registry.errors import VerificationError
from registry.identity import Identity, key_id_of, verify_signature

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_bundle(identity: Identity, payload_type: str, payload: bytes) -> dict[str, Any]:
    """A Sigstore bundle (key mode: hint = key id, no transparency log) over one DSSE envelope."""
    sig = identity.sign(pae(payload_type, payload))
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": identity.key_id}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }


def bundle_hint(bundle: Any, what: str) -> str:
    """The signer key id a bundle claims (unauthenticated until `verify_bundle`)."""
    try:
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    except (KeyError, TypeError):
        raise VerificationError(f"{what} has no verificationMaterial.publicKey.hint; not a key-mode bundle") from None
    if not isinstance(hint, str) or not hint:
        raise VerificationError(f"{what} has an empty public key hint")
    return hint


def verify_bundle(bundle: Any, public_pem: bytes | str, what: str = "bundle",
                  payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """Check the bundle's hint names `public_pem` and its DSSE signature; return the payload bytes."""
    hint = bundle_hint(bundle, what)
    actual = key_id_of(public_pem)
    if hint != actual:
        raise VerificationError(f"{what} was signed by key {hint[:16]}…, not by the expected key {actual[:16]}…")
    try:
        env = bundle["dsseEnvelope"]
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = env["signatures"]
        kind = env["payloadType"]
        sig = base64.b64decode(sigs[0]["sig"], validate=True)
    except (KeyError, TypeError, IndexError, ValueError, binascii.Error):
        raise VerificationError(f"{what} has a malformed DSSE envelope") from None
    if kind != payload_type:
        raise VerificationError(f"{what} carries payload type {kind!r}, expected {payload_type!r}")
    if not verify_signature(public_pem, pae(kind, payload), sig):
        raise VerificationError(f"{what}: the signature does not match its payload (tampered or wrong key)")
    return payload
