"""Signed model advertisements as they cross the wire, and their verification.

    ad = SignedAd(model_id, manifest_bytes, signature_bytes, files=(...))
    checked = verify_ad(ad)        # VerificationError unless signature, id and manifest agree
    checked.resources              # {relpath: sha256 hex} — the signed file list to fetch

A peer's ad is untrusted until `verify_ad` passes: the model.sig bundle must verify with the
public key the manifest carries, its statement's root digest must equal the advertised id, and
the manifest bytes must be the ones the statement lists for `mergenet.json`. The file sizes in
an ad are advisory only (progress); the per-file digests come from the signed statement.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from registry.errors import BadModelError, VerificationError
from registry.manifest import Manifest
from registry.signing import verify_model_sig

MANIFEST_NAME = "mergenet.json"
# Ads larger than this are refused before parsing. A manifest lists per-tensor digests, about
# 100 KiB for a model with a thousand tensors; gRPC refuses anything above ~1 MiB anyway.
MAX_AD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SignedAd:
    """One model as a holder offers it; nothing here is trusted before `verify_ad`."""

    model_id: str
    manifest: bytes
    signature: bytes
    files: tuple[tuple[str, str, int], ...] = ()  # (relpath, sha256 hex, size)
    attestations: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class VerifiedAd:
    """An ad whose signature, id and manifest checked out."""

    ad: SignedAd
    manifest: Manifest
    key_id: str
    resources: dict[str, str] = field(default_factory=dict)  # relpath → sha256 hex (signed)

    @property
    def model_id(self) -> str:
        return self.ad.model_id

    def size_of(self, relpath: str) -> int:
        """The advertised size of a file (advisory), 0 when unknown."""
        return next((size for path, _, size in self.ad.files if path == relpath), 0)


def verify_ad(ad: SignedAd) -> VerifiedAd:
    """Check an ad end to end; VerificationError naming what failed."""
    what = f"advertisement for {ad.model_id[:24]}"
    if len(ad.manifest) + len(ad.signature) > MAX_AD_BYTES:
        raise VerificationError(f"{what} is larger than {MAX_AD_BYTES} bytes")
    try:
        manifest = Manifest.from_json(ad.manifest, label=f"{what}: {MANIFEST_NAME}")
    except BadModelError as exc:
        raise VerificationError(str(exc)) from None
    signed = verify_model_sig(ad.signature, manifest.publisher_public_key)
    if signed.model_id != ad.model_id:
        raise VerificationError(f"{what}: the signed files hash to {signed.model_id[:24]}…, not to the advertised id")
    if signed.resources.get(MANIFEST_NAME) != hashlib.sha256(ad.manifest).hexdigest():
        raise VerificationError(f"{what}: {MANIFEST_NAME} is not the one the signature covers")
    return VerifiedAd(ad=ad, manifest=manifest, key_id=signed.key_id, resources=dict(signed.resources))
