"""`model.sig`: the OpenSSF model-signing 1.1.1 key-mode signature over a model folder.

    raw, root = sign_files(identity, "my-expert", {"config.json": "ab12…", …})
    signed = verify_model_sig(raw, public_pem)   # SignedFiles(root, resources, …) or VerificationError

A Sigstore bundle v0.3 wraps a DSSE envelope over an in-toto Statement v1 whose predicate
lists every file's sha256 (sorted by name) and whose subject digest — the root — is the sha256
of the concatenated raw file digests. `model_signing verify key DIR --signature DIR/model.sig
--public_key PUB.pem` accepts what this writes; the model id is `sha256:<root>`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.dsse import IN_TOTO_PAYLOAD_TYPE, bundle_hint, sign_bundle, verify_bundle
from registry.errors import BadModelError, VerificationError
from registry.folder import IGNORE_PATHS, SIGNATURE_FILE, check_relpath, is_ignored
from registry.identity import Identity
from registry.statements import IN_TOTO_STATEMENT_TYPE

MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
HASH_TYPE = "sha256"


@dataclass(frozen=True)
class SignedFiles:
    """What a verified model.sig vouches for."""

    root: str  # hex root digest: the model id without its `sha256:` prefix
    resources: dict[str, str]  # relative path → sha256 hex, sorted by path
    ignore_paths: tuple[str, ...]
    model_name: str
    key_id: str

    @property
    def model_id(self) -> str:
        return "sha256:" + self.root


def root_digest(resources: Mapping[str, str]) -> str:
    """sha256 over the raw 32-byte digests in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(resources):
        h.update(bytes.fromhex(resources[name]))
    return h.hexdigest()


def build_statement(model_name: str, resources: Mapping[str, str]) -> dict[str, Any]:
    items = [{"name": n, "algorithm": HASH_TYPE, "digest": resources[n]} for n in sorted(resources)]
    return {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root_digest(resources)}}],
        "predicateType": MODEL_SIGNING_PREDICATE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": HASH_TYPE, "allow_symlinks": False,
                              "ignore_paths": list(IGNORE_PATHS)},
            "resources": items,
        },
    }


def sign_files(identity: Identity, model_name: str, resources: Mapping[str, str]) -> tuple[bytes, str]:
    """model.sig bytes for these files; returns (bytes, root hex)."""
    for name in resources:
        signed_name(name)
    statement = build_statement(model_name or "model", resources)
    payload = json.dumps(statement, indent=2).encode()
    bundle = sign_bundle(identity, IN_TOTO_PAYLOAD_TYPE, payload)
    return json.dumps(bundle, separators=(",", ":")).encode(), statement["subject"][0]["digest"]["sha256"]


def parse_bundle(raw: bytes, what: str = SIGNATURE_FILE) -> dict[str, Any]:
    try:
        bundle = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise VerificationError(f"{what} is not a JSON Sigstore bundle") from None
    if not isinstance(bundle, dict):
        raise VerificationError(f"{what} is not a JSON Sigstore bundle")
    return bundle


def signer_hint(raw: bytes) -> str:
    """The key id model.sig claims (unauthenticated), to find the right public key."""
    return bundle_hint(parse_bundle(raw), SIGNATURE_FILE)


def verify_model_sig(raw: bytes, public_pem: bytes | str) -> SignedFiles:
    """Check model.sig's signature by `public_pem` and the statement's internal consistency."""
    bundle = parse_bundle(raw)
    key_id = bundle_hint(bundle, SIGNATURE_FILE)
    payload = verify_bundle(bundle, public_pem, what=SIGNATURE_FILE)
    try:
        st = json.loads(payload)
        subject = st["subject"]
        pred = st["predicate"]
        ser = pred["serialization"]
        items = pred["resources"]
        name, root = subject[0]["name"], subject[0]["digest"]["sha256"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise VerificationError(f"{SIGNATURE_FILE} does not hold a model-signing statement") from None
    if st.get("_type") != IN_TOTO_STATEMENT_TYPE or st.get("predicateType") != MODEL_SIGNING_PREDICATE:
        raise VerificationError(f"{SIGNATURE_FILE} has predicate type {st.get('predicateType')!r}, "
                                f"expected {MODEL_SIGNING_PREDICATE}")
    if not isinstance(ser, dict) or not isinstance(items, list) or not isinstance(subject, list):
        raise VerificationError(f"{SIGNATURE_FILE} has a malformed statement (serialization, resources or subject)")
    if len(subject) != 1 or ser.get("method") != "files" or ser.get("hash_type") != HASH_TYPE:
        raise VerificationError(f"{SIGNATURE_FILE} uses serialization {ser!r}; only per-file sha256 is supported")
    resources: dict[str, str] = {}
    h = hashlib.sha256()
    try:
        for item in items:
            rel, digest = signed_name(item["name"]), item["digest"]
            if item["algorithm"] != HASH_TYPE or rel in resources:
                raise VerificationError(f"{SIGNATURE_FILE} lists {rel!r} twice or with a non-sha256 digest")
            h.update(bytes.fromhex(digest))
            resources[rel] = digest.lower()
    except BadModelError as exc:
        raise VerificationError(f"{SIGNATURE_FILE}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise VerificationError(f"{SIGNATURE_FILE} has a malformed resource entry") from None
    if h.hexdigest() != root:
        raise VerificationError(f"{SIGNATURE_FILE} is inconsistent: its root digest does not match its file list")
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise VerificationError(f"{SIGNATURE_FILE} has malformed ignore_paths")
    return SignedFiles(root=root, resources=dict(sorted(resources.items())), ignore_paths=tuple(ignore),
                       model_name=str(name), key_id=key_id)


def _unverified_predicate(raw: bytes) -> dict[str, Any]:
    """The statement's predicate before any check — only to decide what to verify next."""
    import base64

    try:
        payload = base64.b64decode(parse_bundle(raw)["dsseEnvelope"]["payload"])
        pred = json.loads(payload)["predicate"]
    except (KeyError, TypeError, ValueError, RecursionError):
        raise VerificationError(f"{SIGNATURE_FILE} has a malformed DSSE envelope") from None
    if not isinstance(pred, dict):
        raise VerificationError(f"{SIGNATURE_FILE} does not hold a model-signing statement")
    return pred


def declared_ignore_paths(raw: bytes) -> tuple[str, ...]:
    """ignore_paths as model.sig declares them (verification fails later if they were altered)."""
    ser = _unverified_predicate(raw).get("serialization", {})
    ignore = ser.get("ignore_paths", []) if isinstance(ser, dict) else []
    return tuple(p for p in ignore if isinstance(p, str)) if isinstance(ignore, list) else ()


def parse_signed_resources(raw: bytes) -> dict[str, str]:
    """{path: sha256} as model.sig lists them, unverified: tells a puller which blobs to fetch."""
    try:
        items = _unverified_predicate(raw)["resources"]
        if not isinstance(items, list):
            raise TypeError("resources is not a list")
        return {signed_name(i["name"]): str(i["digest"]).lower() for i in items}
    except (KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(f"{SIGNATURE_FILE} has a malformed resource list ({exc})") from None
    except BadModelError as exc:
        raise VerificationError(f"{SIGNATURE_FILE}: {exc}") from None


def signed_name(name: str) -> str:
    """A file name a signature may list, and so a puller may write: a safe relative path, UTF-8,
    never one of the paths model-signing ignores (model.sig, .git, ...) and no `.git` folder at any
    depth — a signed `.git/config` written into a pulled folder would run code on the next `git`."""
    rel = check_relpath(name, "signed file name")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise BadModelError(f"signed file name {rel!r} is not valid UTF-8") from None
    if is_ignored(rel) or any(part.lower() == ".git" for part in rel.split("/")):
        raise BadModelError(f"signed file name {rel!r} is a path model-signing ignores (.git, model.sig, ...); "
                            "a signature must not list it")
    return rel
