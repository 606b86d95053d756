"""Signed in-toto statements by others: consents, attestations and plan commits.

    bundle = sign_statement(identity, "sha256:<model>", model_hex, ATTESTATION_V1, {"tensors": [...]})
    vs = verify_statement(bundle, expected_key_id=None)  # VerifiedStatement or VerificationError

A statement bundle is a model.sig-style Sigstore bundle (DSSE over an in-toto Statement v1)
plus `publicKeyPem`, the signer's key carried alongside so any receiver can verify it; the
hint must equal the key id of that PEM, so the carried key cannot be swapped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from registry.dsse import IN_TOTO_PAYLOAD_TYPE, sign_bundle, verify_bundle
from registry.errors import BadModelError, VerificationError
from registry.identity import Identity, key_id_of, matches_key_id
from registry.ids import digest_hex

IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
CONSENT_V1 = "https://mergenet.dev/consent/v1"
ATTESTATION_V1 = "https://mergenet.dev/attestation/v1"
PLAN_V1 = "https://mergenet.dev/plan/v1"
PUBLIC_KEY_FIELD = "publicKeyPem"


def strip_sha256(digest: str) -> str:
    """`sha256:<hex>` or `<hex>` → lower-case hex; BadModelError when it is not 64 hex digits."""
    hexpart = digest_hex(digest.removeprefix("sha256:").lower())
    if hexpart is None:
        raise BadModelError(f"{digest!r} is not a sha256 digest (expected 64 hex digits)")
    return hexpart


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace: the form ids and signatures are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement whose signature checked out, with who signed it."""

    statement: dict[str, Any]
    predicate_type: str
    predicate: dict[str, Any]
    subject_name: str
    subject_digest: str  # hex, no prefix
    key_id: str
    public_pem: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"predicate_type": self.predicate_type, "predicate": self.predicate, "subject_name": self.subject_name,
                "subject_digest": self.subject_digest, "key_id": self.key_id}


def sign_statement(identity: Identity, subject_name: str, subject_digest_hex: str, predicate_type: str,
                   predicate: dict[str, Any]) -> dict[str, Any]:
    """Sign `predicate` about one subject (a model or plan id); returns the JSON-ready bundle."""
    statement = {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": strip_sha256(subject_digest_hex)}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    bundle = sign_bundle(identity, IN_TOTO_PAYLOAD_TYPE, canonical_json(statement))
    bundle[PUBLIC_KEY_FIELD] = identity.public_pem.decode()
    return bundle


def verify_statement(bundle: Any, expected_key_id: str | None = None,
                     predicate_type: str | None = None) -> VerifiedStatement:
    """Verify a statement bundle by the key it carries; optionally require signer and predicate type."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get(PUBLIC_KEY_FIELD), str):
        raise VerificationError(f"statement bundle carries no {PUBLIC_KEY_FIELD}; cannot verify it")
    pem = bundle[PUBLIC_KEY_FIELD].encode()
    try:
        key_id = key_id_of(pem)
    except BadModelError as exc:
        raise VerificationError(f"statement bundle's {PUBLIC_KEY_FIELD} is unusable: {exc}") from None
    if expected_key_id is not None and not matches_key_id(key_id, expected_key_id):
        raise VerificationError(f"statement was signed by {key_id}, not by the expected signer {expected_key_id}")
    payload = verify_bundle(bundle, pem, what="statement")
    try:
        st = json.loads(payload)
        ptype = st["predicateType"]
        subject = st["subject"][0]
        name, digest = subject["name"], subject["digest"]["sha256"]
        predicate = st["predicate"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise VerificationError("statement payload is not an in-toto Statement v1 with one subject") from None
    if st.get("_type") != IN_TOTO_STATEMENT_TYPE or not isinstance(predicate, dict):
        raise VerificationError(f"statement payload has _type {st.get('_type')!r}, expected {IN_TOTO_STATEMENT_TYPE}")
    if predicate_type is not None and ptype != predicate_type:
        raise VerificationError(f"statement has predicate type {ptype!r}, expected {predicate_type!r}")
    return VerifiedStatement(statement=st, predicate_type=ptype, predicate=predicate, subject_name=str(name),
                             subject_digest=str(digest), key_id=key_id, public_pem=pem)
