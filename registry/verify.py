"""Verify a signed file set — a folder on disk or blobs in the store — against its model.sig.

    signed, manifest = verify_file_set(paths, sig_bytes, signer="ab12cd34")
    # VerificationError naming the file, the actual signer, or what does not match

Signed data drives verification: the public key comes from mergenet.json (or, for folders
signed by plain model-signing, from a trusted PEM matching the bundle's hint), must be the key
that signed model.sig, and every file listed — and only those — must hash to its signed digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from registry.errors import BadModelError, VerificationError
from registry.fingerprints import architecture_fingerprint
from registry.folder import IGNORE_PATHS, MANIFEST_FILE, SIGNATURE_FILE, WEIGHT_SUFFIX, list_files
from registry.hashing import FileDigest, ProgressFn, TensorRange, hash_files
from registry.identity import key_id_of, matches_key_id
from registry.manifest import Manifest
from registry.safetensors_check import check_safetensors
from registry.signing import SignedFiles, declared_ignore_paths, signer_hint, verify_model_sig

log = logging.getLogger(__name__)

KeyLookup = Callable[[str], bytes | None]


def _manifest_from(path: Path | None) -> tuple[Manifest | None, str | None]:
    """(manifest, None) or (None, why it is unusable); no manifest file at all is (None, None)."""
    if path is None:
        return None, None
    try:
        return Manifest.from_json(path.read_bytes()), None
    except FileNotFoundError:
        return None, f"{MANIFEST_FILE} is missing"
    except BadModelError as exc:
        return None, str(exc)


def read_signature(folder: Path) -> bytes:
    try:
        return (folder / SIGNATURE_FILE).read_bytes()
    except FileNotFoundError:
        raise VerificationError(f"{folder} has no {SIGNATURE_FILE}; it is not a signed model "
                                "(run `mergenet submit` on it)") from None
    except IsADirectoryError:
        raise VerificationError(f"{folder / SIGNATURE_FILE} is not a file") from None


def folder_file_set(folder: Path) -> tuple[dict[str, Path], bytes]:
    """({relative path: path} of every file a signature must cover, model.sig bytes) of a folder.

    Honours extra ignore paths the signer declared (model-signing lets signers add some); if
    they were altered, the signature check fails later. Pickles are listed, not refused, so an
    added one is reported as an unsigned extra file.
    """
    if not folder.is_dir():
        raise BadModelError(f"{folder} is not a folder or a model id")
    sig_raw = read_signature(folder)
    extra = tuple(p for p in declared_ignore_paths(sig_raw) if p not in IGNORE_PATHS)
    try:
        rels = list_files(folder, ignore=IGNORE_PATHS + extra, refuse_pickles=False)
    except BadModelError as exc:
        raise VerificationError(str(exc)) from None
    return {rel: folder.joinpath(*rel.split("/")) for rel in rels}, sig_raw


def verify_file_set(paths: Mapping[str, Path], sig_raw: bytes, *, signer: str | None = None,
                    key_lookup: KeyLookup | None = None, deep: bool = False,
                    progress: ProgressFn | None = None,
                    store_blobs: bool = False) -> tuple[SignedFiles, Manifest | None]:
    """Check signature, signer, file set and every digest; return what was signed.

    `store_blobs` says every path is a content-store blob named by its sha256 (checked when it
    entered the store), so the digest is read off the path instead of re-hashing the bytes."""
    hint = signer_hint(sig_raw)
    manifest, manifest_problem = _manifest_from(paths.get(MANIFEST_FILE))
    if manifest is not None:
        pem: bytes | None = manifest.publisher_public_key.encode()
        if key_id_of(pem) != hint:
            raise VerificationError(f"model.sig was signed by key {hint}, but {MANIFEST_FILE} names publisher "
                                    f"{manifest.publisher_key_id}; the folder was re-signed or the manifest edited")
    else:
        pem = key_lookup(hint) if key_lookup else None
        if pem is None:
            why = manifest_problem or f"there is no {MANIFEST_FILE}"
            raise VerificationError(f"cannot verify: {why} (changed after signing?), and signer {hint} "
                                    "is not a trusted key with a known PEM")
    if signer is not None and not matches_key_id(hint, signer):
        raise VerificationError(f"signed by {hint}, not by the expected signer {signer}")
    signed = verify_model_sig(sig_raw, pem)

    extra = sorted(set(paths) - set(signed.resources))
    missing = sorted(set(signed.resources) - set(paths))
    if extra:
        raise VerificationError(f"extra file {extra[0]!r} is not covered by model.sig"
                                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if missing:
        raise VerificationError(f"file {missing[0]!r} listed in model.sig is missing"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for rel, path in paths.items():
        if not path.is_file():
            raise VerificationError(f"file {rel!r} listed in model.sig is missing (no bytes at {path})")
    if manifest_problem:  # unparseable manifest but the signer's key was known: say which bytes changed
        log.debug("manifest unusable: %s", manifest_problem)

    ranges = _tensor_ranges(paths, manifest) if deep and manifest else {}
    if store_blobs and not deep:
        digests = {rel: FileDigest(path.name, path.stat().st_size, {}) for rel, path in paths.items()}
    else:
        digests = hash_files(paths, tensors=ranges, progress=progress)
    bad = [rel for rel in sorted(paths) if digests[rel].sha256 != signed.resources[rel]]
    if bad:
        rel = bad[0]
        raise VerificationError(f"hash mismatch for {rel!r}: signed sha256 {signed.resources[rel]}, actual "
                                f"{digests[rel].sha256}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if manifest is None and manifest_problem:
        raise VerificationError(f"{MANIFEST_FILE} is unusable although its bytes are signed: {manifest_problem}")
    if manifest is not None:
        _check_manifest_tensors(paths, manifest, digests if deep else None)
        wrong = sorted(rel for rel, size in manifest.sizes.items()
                       if digests.get(rel, FileDigest("", size)).size != size)
        if wrong:
            raise VerificationError(f"{MANIFEST_FILE} gives {wrong[0]!r} a size of {manifest.sizes[wrong[0]]} bytes, "
                                    f"but the signed file has {digests[wrong[0]].size}")
    return signed, manifest


def _tensor_ranges(paths: Mapping[str, Path], manifest: Manifest) -> dict[str, list[TensorRange]]:
    out = {}
    for rel in manifest.tensors:
        if rel in paths:
            try:
                info = check_safetensors(paths[rel], name=rel)
            except BadModelError as exc:
                raise VerificationError(str(exc)) from None
            out[rel] = [(n, info.data_start + t.start, info.data_start + t.end) for n, t in info.tensors.items()]
    return out


def _check_manifest_tensors(paths: Mapping[str, Path], manifest: Manifest, digests) -> None:
    """The signed manifest must describe exactly the signed weight files, their tensors and their
    architecture: peers plan merges from manifests, so a manifest must not lie about the weights."""
    weights = {rel for rel in paths if rel.endswith(WEIGHT_SUFFIX)}
    if set(manifest.tensors) != weights:
        raise VerificationError(f"{MANIFEST_FILE} lists tensors for {sorted(manifest.tensors)} but the signed "
                                f"weight files are {sorted(weights)}")
    infos = {}
    for rel, expected in manifest.tensors.items():
        try:
            infos[rel] = check_safetensors(paths[rel], name=rel)
        except BadModelError as exc:
            raise VerificationError(str(exc)) from None
        if set(infos[rel].tensors) != set(expected):
            raise VerificationError(f"{MANIFEST_FILE} tensor list for {rel!r} does not match the file's header")
        if digests is not None:
            for name, hexd in sorted(digests[rel].tensors.items()):
                if expected[name] != hexd:
                    raise VerificationError(f"tensor {name!r} in {rel!r} does not match its digest in {MANIFEST_FILE}")
    try:
        arch = architecture_fingerprint(manifest.model_type, infos)
    except BadModelError as exc:
        raise VerificationError(str(exc)) from None
    if arch != manifest.architecture_fingerprint:
        raise VerificationError(f"{MANIFEST_FILE} claims an architecture fingerprint that the weights do not have")
