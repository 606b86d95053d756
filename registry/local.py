"""The registry facade everything else uses: submit, verify, get, list, materialize, ingest.

    reg = LocalRegistry(home)
    rec = reg.submit(Path("my-expert"), tags=("math",)); reg.verify(rec.id); reg.materialize(rec.id, out)

Submit runs the pipeline validate → hash (+ copy into the store, one read per file) →
manifest → sign → index. Everything it writes into the caller's folder is mergenet.json and
model.sig, each replaced atomically; a folder is only ever made visible complete and verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.attestations import AttestationTally, count_attestations
from registry.errors import BadModelError, NotFoundError, VerificationError
from registry.fingerprints import architecture_fingerprint, tokenizer_fingerprint
from registry.folder import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FolderScan,
    check_relpath,
    is_pickle,
    scan_folder,
)
from registry.hashing import FileDigest, ProgressFn, hash_files
from registry.home import Home, as_home
from registry.identity import Identity
from registry.ids import PREFIX, ModelId
from registry.index import Index, ModelRow
from registry.manifest import KINDS, POLICIES, Manifest, validate_choice, validate_license
from registry.provenance import Provenance
from registry.records import ModelRecord, VerifiedModel
from registry.safetensors_check import SafetensorsInfo, check_safetensors
from registry.signing import parse_signed_resources, sign_files
from registry.statements import ATTESTATION_V1, VerifiedStatement, strip_sha256, verify_statement
from registry.store import BlobStore
from registry.trust import TrustList
from registry.verify import folder_file_set, read_signature, verify_file_set
from registry.version import MERGENET_VERSION

log = logging.getLogger(__name__)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def looks_like_path(text: str) -> bool:
    """A path (not an id prefix): it has a separator or starts like one (`.`, `~`)."""
    return os.sep in text or "/" in text or text.startswith((".", "~"))


class LocalRegistry:
    """One home's registry: identity, content store, SQLite index and trusted keys."""

    def __init__(self, home: Home | Path | str):
        self.home = as_home(home).ensure()
        self.index = Index(self.home.db_path)
        self.store = BlobStore(self.home.store_dir, self.home.tmp_dir)
        self.trust = TrustList(self.home.trust_path)
        self._identity: Identity | None = None

    def close(self) -> None:
        self.index.close()

    def identity(self) -> Identity:
        if self._identity is None:
            self._identity, _ = Identity.load_or_create(self.home)
        return self._identity

    def is_trusted(self, key_id: str) -> bool:
        """The home's own key is trusted implicitly; others through `mergenet trust add`."""
        own = self.home.key_path.exists() and self.identity().key_id == key_id  # never creates a key
        return own or self.trust.contains(key_id)

    def resolve(self, id_or_prefix: str) -> str:
        return self.index.resolve(id_or_prefix)

    def blob_path(self, sha256: str) -> Path:
        return self.store.path(sha256)

    # ---- submit ---------------------------------------------------------------------------
    def submit(self, model_dir: Path | str, *, kind: str = "expert", base: str | Path | None = None,
               tags: Iterable[str] = (), license: str | None = None, policy: str = "open",
               provenance: Provenance | None = None, eval_scores: Mapping[str, float] | None = None,
               name: str | None = None, progress: ProgressFn | None = None) -> ModelRecord:
        """Validate, hash, store, sign and index the caller's own model folder."""
        root = Path(model_dir)
        validate_choice(kind, KINDS, "kind")
        validate_choice(policy, POLICIES, "policy")
        validate_license(license)
        scan, infos = self._validate_folder(root)
        if scan.is_adapter != (kind == "adapter"):
            raise BadModelError(f"{root} is a LoRA adapter folder; submit it with --kind adapter" if scan.is_adapter
                                else f"{root} is not a LoRA adapter folder (no adapter_config.json instead of "
                                     "config.json); --kind adapter is for PEFT LoRA adapters")
        base_id = self._resolve_base(base)
        ident = self.identity()
        content = [f for f in scan.files if f != MANIFEST_FILE]
        digests = self._hash_into_store(scan, content, infos, progress)

        manifest = self._keep_created(root, Manifest(
            kind=kind, name=name or root.resolve().name, model_type=scan.model_type,
            architecture_fingerprint=architecture_fingerprint(scan.model_type, infos),
            tokenizer_fingerprint=tokenizer_fingerprint(root),
            tensors={w: digests[w].tensors for w in sorted(infos)},
            publisher_key_id=ident.key_id, publisher_public_key=ident.public_pem.decode(),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), base_model=base_id,
            tags=tuple(t.strip() for t in tags if t.strip()), license=license, policy=policy,
            eval_scores={k: float(v) for k, v in (eval_scores or {}).items()},
            provenance=provenance.to_dict() if provenance is not None else None, mergenet_version=MERGENET_VERSION,
            sizes={f: digests[f].size for f in content},
        ))
        manifest_bytes = manifest.to_json()
        self.store.put_bytes(manifest_bytes)
        files = {f: (digests[f].sha256, digests[f].size) for f in content}
        files[MANIFEST_FILE] = (hashlib.sha256(manifest_bytes).hexdigest(), len(manifest_bytes))
        sig_raw, root_hex = sign_files(ident, root.resolve().name, {f: sha for f, (sha, _) in files.items()})
        _atomic_write(root / MANIFEST_FILE, manifest_bytes)
        _atomic_write(root / SIGNATURE_FILE, sig_raw)
        model_id = "sha256:" + root_hex
        self._index(model_id, manifest, sig_raw, ident.key_id, files)
        log.info("submitted %s as %s", root, model_id)
        return self.get(model_id)

    @staticmethod
    def _validate_folder(root: Path) -> tuple[FolderScan, dict[str, SafetensorsInfo]]:
        """Everything that can be wrong with the folder is found here, before any byte is written."""
        scan = scan_folder(root)
        for own in (MANIFEST_FILE, SIGNATURE_FILE):
            if (root / own).exists() and not (root / own).is_file():
                raise BadModelError(f"{root / own} is not a regular file; submit writes {own} there (remove it)")
        if not os.access(root, os.W_OK):
            raise BadModelError(f"{root} is not writable; submit writes {MANIFEST_FILE} and {SIGNATURE_FILE} "
                                "into it (copy the folder somewhere writable)")
        infos = {w: check_safetensors(scan.path(w), name=w) for w in scan.weights}
        architecture_fingerprint(scan.model_type, infos)  # refuses a tensor duplicated across shards
        tokenizer_fingerprint(root)  # refuses an unreadable tokenizer.json
        return scan, infos

    def _hash_into_store(self, scan: FolderScan, content: list[str], infos: Mapping[str, SafetensorsInfo],
                         progress: ProgressFn | None) -> dict[str, FileDigest]:
        """One read per file yields its digest, its tensor digests and its copy in the store."""
        ranges = {w: [(n, info.data_start + t.start, info.data_start + t.end) for n, t in info.tensors.items()]
                  for w, info in infos.items()}

        def store_while_hashing(_name: str, path: Path, rng, on_bytes) -> FileDigest:
            return self.store.put_hashed(path, rng, on_bytes=on_bytes)

        digests = hash_files({f: scan.path(f) for f in content}, tensors=ranges, progress=progress,
                             per_file=store_while_hashing)
        for w, info in infos.items():  # the bytes we hashed must be the ones whose header we checked
            if check_safetensors(self.store.path(digests[w].sha256), name=w) != info:
                raise BadModelError(f"{w} changed while it was being submitted; submit again")
        return digests

    def _keep_created(self, root: Path, manifest: Manifest) -> Manifest:
        """Re-submitting an unchanged folder keeps its old timestamp, hence its id."""
        try:
            old = Manifest.from_json((root / MANIFEST_FILE).read_bytes())
        except (OSError, BadModelError):
            return manifest
        same = dataclasses.replace(manifest, created=old.created)
        return same if same == old else manifest

    def _resolve_base(self, base: str | Path | None) -> str | None:
        if base is None or str(base) == "":
            return None
        path = Path(base)
        if path.is_dir():
            if not (path / SIGNATURE_FILE).exists():
                raise BadModelError(f"base folder {path} is not a signed model; run `mergenet submit {path}` first")
            return self.verify(path).id
        try:
            return self.index.resolve(str(base))
        except NotFoundError:
            # a complete id of a model we do not hold is fine; a short prefix is not
            full = ModelId.parse(str(base) if ModelId.looks_like(str(base)) else PREFIX + str(base))
            log.info("base %s is not in the local registry", full)
            return full

    def _index(self, model_id: str, manifest: Manifest, sig: bytes, signer: str,
               files: Mapping[str, tuple[str, int]]) -> None:
        self.index.add_model(ModelRow(id=model_id, kind=manifest.kind, name=manifest.name,
                                      manifest=manifest.to_json().decode(), signature=sig, signer=signer,
                                      created=manifest.created), files)

    # ---- verify ---------------------------------------------------------------------------
    def verify(self, id_or_dir: str | Path, signer: str | None = None, trusted_only: bool = False,
               deep: bool = False, progress: ProgressFn | None = None) -> VerifiedModel:
        """Verify a folder (if the path exists) or a stored model by id; VerificationError on failure."""
        path = Path(id_or_dir)
        if path.exists():
            (paths, sig_raw), source = folder_file_set(path), str(path)
        elif looks_like_path(str(id_or_dir)):
            raise BadModelError(f"no such folder: {path}")
        else:
            model_id = self.index.resolve(str(id_or_dir))
            row = self.index.get(model_id)
            missing = self.missing_files(model_id)
            if missing:
                raise VerificationError(f"{len(missing)} file(s) of {model_id} are missing from the content store "
                                        f"({missing[0]!r}; removed by `mergenet store check --repair`?); run "
                                        f"`mergenet pull {model_id}` to fetch them again")
            paths = {rel: self.store.path(sha) for rel, (sha, _) in self.index.files(model_id).items()}
            sig_raw, source = row.signature, "store"
        signed, manifest = verify_file_set(paths, sig_raw, signer=signer, key_lookup=self.trust.public_pem,
                                           deep=deep, progress=progress)
        trusted = self.is_trusted(signed.key_id)
        if trusted_only and not trusted:
            raise VerificationError(f"signed by {signed.key_id}, which is not in the trusted-keys list "
                                    "(`mergenet trust add KEY`)")
        return VerifiedModel(id=signed.model_id, signer=signed.key_id, manifest=manifest,
                             files=dict(signed.resources), source=source, trusted=trusted)

    def missing_files(self, model_id: str) -> list[str]:
        """Relative paths of a registered model whose blobs are not in the store."""
        return sorted(rel for rel, (sha, _) in self.index.files(model_id).items() if not self.store.has(sha))

    # ---- read -----------------------------------------------------------------------------
    def get(self, id_or_prefix: str) -> ModelRecord:
        model_id = self.index.resolve(id_or_prefix)
        row = self.index.get(model_id)
        if row is None:
            raise NotFoundError(f"no model {id_or_prefix} in this registry")
        return self._record(row)

    def list(self, kind: str | None = None) -> list[ModelRecord]:
        if kind is not None:
            validate_choice(kind, KINDS, "kind")
        return [self._record(row) for row in self.index.list(kind)]

    def _record(self, row: ModelRow) -> ModelRecord:
        return ModelRecord(id=row.id, manifest=Manifest.from_json(row.manifest), signature=row.signature,
                           signer=row.signer, files=self.index.files(row.id),
                           attestations=tuple(self.index.attestations(row.id)), added=row.added)

    # ---- move models in and out -----------------------------------------------------------
    def materialize(self, id_or_prefix: str, out_dir: Path | str, progress: ProgressFn | None = None) -> Path:
        """Write a stored model as a folder: built and verified beside `out_dir`, then renamed into place."""
        rec = self.get(id_or_prefix)
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BadModelError(f"{out} already exists and is not empty; choose another output folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".incomplete", dir=out.parent))
        try:
            for rel, (sha, _size) in rec.files.items():
                dest = tmp.joinpath(*check_relpath(rel).split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.store.copy_out(sha, dest)
            (tmp / SIGNATURE_FILE).write_bytes(rec.signature)
            got = self.verify(tmp, progress=progress)
            if got.id != rec.id:
                raise VerificationError(f"materialized folder verifies as {got.id}, not {rec.id}")
            if out.exists():
                out.rmdir()
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def ingest(self, folder: Path | str, signer: str | None = None, progress: ProgressFn | None = None) -> ModelRecord:
        """Register a folder signed by anyone (e.g. a pulled model) without re-signing it."""
        folder = Path(folder)
        verified = self.verify(folder, signer=signer, progress=progress)
        paths = {rel: folder.joinpath(*rel.split("/")) for rel in verified.files}
        return self._register_verified(verified, read_signature(folder), paths)

    def ingest_from_store(self, signature: bytes, files: Iterable[str] | Mapping[str, Any],
                          signer: str | None = None) -> ModelRecord:
        """Register a model whose blobs are already in the store (a pull that committed partials).

        `files` are the relative paths; their digests come from the verified signature."""
        resources = parse_signed_resources(signature)
        unknown = sorted(set(files) - set(resources))
        if unknown:
            raise VerificationError(f"extra file {unknown[0]!r} is not covered by model.sig")
        missing = sorted(rel for rel in resources if not self.store.has(resources[rel]))
        if missing:
            raise VerificationError(f"blob for {missing[0]!r} is not in the store; fetch it first")
        paths = {rel: self.store.path(sha) for rel, sha in resources.items()}
        signed, manifest = verify_file_set(paths, signature, signer=signer, key_lookup=self.trust.public_pem,
                                           store_blobs=True)
        verified = VerifiedModel(id=signed.model_id, signer=signed.key_id, manifest=manifest,
                                 files=dict(signed.resources), source="store", trusted=self.is_trusted(signed.key_id))
        return self._register_verified(verified, signature, paths)

    def _register_verified(self, verified: VerifiedModel, sig: bytes, paths: Mapping[str, Path]) -> ModelRecord:
        if verified.manifest is None:
            raise BadModelError(f"{verified.source} has no {MANIFEST_FILE}; only mergenet models can be registered")
        pickles = [rel for rel in verified.files if is_pickle(rel)]
        if pickles:
            raise BadModelError(f"{pickles[0]} is a pickled checkpoint; mergenet accepts only *.safetensors weights")
        files = {}
        for rel, sha in verified.files.items():
            self.store.put_file(paths[rel], digest=sha)  # re-hashed while copying: catches a change since verify
            files[rel] = (sha, self.store.size(sha))
        self._index(verified.id, verified.manifest, sig, verified.signer, files)
        return self.get(verified.id)

    # ---- statements -----------------------------------------------------------------------
    def add_attestation(self, model_id: str, bundle: Mapping[str, Any]) -> VerifiedStatement:
        """Verify an attestation about `model_id` and keep it; VerificationError if it is not one."""
        vs = verify_statement(dict(bundle), predicate_type=ATTESTATION_V1)
        if vs.subject_digest != strip_sha256(model_id):
            raise VerificationError(f"attestation is about sha256:{vs.subject_digest}, not {model_id}")
        self.index.add_attestation("sha256:" + vs.subject_digest, dict(bundle), vs.key_id)
        return vs

    def attestations(self, model_id: str) -> list[dict[str, Any]]:
        return self.index.attestations(self.index.resolve(model_id))

    def attestation_tally(self, model_id: str, extra: Iterable[Mapping[str, Any]] = ()) -> AttestationTally:
        """Attestations of `model_id` held here (plus `extra` bundles, e.g. from an ad), counted by
        verifier: trusted keys apart from strangers (see registry.attestations)."""
        try:
            held = self.index.attestations(self.index.resolve(model_id))
        except NotFoundError:
            held = []
        return count_attestations([*held, *extra], model_id, self.is_trusted)

