"""Re-hash the content store: find blobs whose bytes are not their name, say which models they
break, and (on request) remove them so that a later pull fetches them again.

    report = check_store(registry)                # StoreReport; report.clean is False on corruption
    report = check_store(registry, repair=True)   # corrupt blobs and stale partials removed

A blob is corrupt when its bytes do not hash to its name, or when a file in the blob tree is
not named (and placed) like a blob at all. Repair removes exactly those: a blob is re-hashed
once more under its writer lock before it is deleted, so a good blob — even one a concurrent
pull just installed in place of the bad one — is never lost. Repair also drops the partial
downloads no writer holds (their bytes cannot be checked until they are complete, so after
corruption they are not worth resuming). Models stay registered: `verify` names their
missing blobs and `mergenet pull ID` fetches them again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import RegistryError
from registry.hashing import FileDigest, ProgressFn, hash_files, sha256_file
from registry.local import LocalRegistry
from registry.statements import strip_sha256

log = logging.getLogger(__name__)

HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ModelRef:
    id: str
    name: str


@dataclass(frozen=True)
class CorruptBlob:
    digest: str  # "sha256:<hex>", or the file's name when it is not a digest
    path: Path
    problem: str
    models: tuple[ModelRef, ...]  # registered models that use this blob
    removed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "path": str(self.path), "problem": self.problem, "removed": self.removed,
                "models": [{"id": m.id, "name": m.name} for m in self.models]}


@dataclass(frozen=True)
class IncompleteModel:
    """A registered model with blobs missing from the store (pull it again to fetch them)."""

    id: str
    name: str
    missing: tuple[str, ...]  # relative paths of the files whose blobs are gone

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "missing": list(self.missing)}


@dataclass(frozen=True)
class StoreReport:
    blobs: int  # files in the blob tree that were checked
    bytes: int
    corrupt: tuple[CorruptBlob, ...]
    incomplete: tuple[IncompleteModel, ...]
    partials: tuple[str, ...]  # digests with a kept partial download (before any repair)
    removed_partials: tuple[str, ...]
    repaired: bool  # --repair ran and removed every corrupt blob it found

    @property
    def clean(self) -> bool:
        """Nothing in the store lies about its bytes (any longer)."""
        return all(c.removed for c in self.corrupt)

    def to_dict(self) -> dict[str, Any]:
        return {"blobs": self.blobs, "bytes": self.bytes, "clean": self.clean, "repaired": self.repaired,
                "corrupt": [c.to_dict() for c in self.corrupt],
                "incomplete_models": [m.to_dict() for m in self.incomplete],
                "partials": list(self.partials), "removed_partials": list(self.removed_partials)}


def check_store(registry: LocalRegistry, repair: bool = False, progress: ProgressFn | None = None) -> StoreReport:
    """Re-hash every blob of `registry`'s store; with `repair`, remove the corrupt ones and the
    partial downloads no writer holds. RegistryError when a blob cannot be read at all."""
    store = registry.store
    users = _blob_users(registry)
    files = list(store.blob_files())
    named = {}  # path -> expected hex, for files that look like blobs
    corrupt: list[CorruptBlob] = []
    for path in files:
        hexd = _blob_name(path)
        if hexd is None:
            corrupt.append(CorruptBlob(path.name, path, "is not a blob (not named sha256/<2 hex>/<64 hex>)", ()))
        else:
            named[str(path)] = hexd
    try:
        digests = hash_files({p: Path(p) for p in named}, progress=progress, per_file=_sha256_only)
    except OSError as exc:
        raise RegistryError(f"cannot read blob {exc.filename or ''} in {store.root}: {exc.strerror or exc}; "
                            "check the disk and permissions, then run `mergenet store check` again") from None
    for p, hexd in sorted(named.items()):
        if digests[p].sha256 != hexd:
            corrupt.append(CorruptBlob("sha256:" + hexd, Path(p), f"bytes hash to sha256:{digests[p].sha256}",
                                       tuple(users.get(hexd, ()))))
    partials = tuple(store.partial_digests())
    removed_partials: tuple[str, ...] = ()
    if repair:
        corrupt = [c for c in (_remove(registry, c) for c in corrupt) if c is not None]
        removed_partials = tuple(store.sweep_partials())
    total = sum(d.size for d in digests.values())
    for c in corrupt:
        log.info("corrupt blob %s: %s%s", c.path, c.problem, " (removed)" if c.removed else "")
    return StoreReport(blobs=len(files), bytes=total, corrupt=tuple(corrupt), incomplete=_incomplete(registry),
                       partials=partials, removed_partials=removed_partials,
                       repaired=repair and all(c.removed for c in corrupt))


def _sha256_only(_name: str, path: Path, _ranges, on_bytes) -> FileDigest:
    return FileDigest(sha256_file(path, on_bytes), path.stat().st_size)


def _blob_name(path: Path) -> str | None:
    """The digest a file in the blob tree claims to hold, or None when it is no blob's file."""
    name = path.name
    if len(name) != 64 or not set(name) <= HEX_DIGITS or path.parent.name != name[:2] or not path.is_file():
        return None
    if path.is_symlink():
        return None
    return name


def _blob_users(registry: LocalRegistry) -> dict[str, list[ModelRef]]:
    """Blob hex digest -> the registered models that list it."""
    users: dict[str, list[ModelRef]] = {}
    for rec in registry.list():
        ref = ModelRef(rec.id, rec.manifest.name)
        for sha, _size in set(rec.files.values()):
            users.setdefault(strip_sha256(sha), []).append(ref)
    return users


def _remove(registry: LocalRegistry, blob: CorruptBlob) -> CorruptBlob | None:
    """Remove one corrupt blob; None when it turned out good after all (replaced meanwhile)."""
    if not blob.digest.startswith("sha256:"):  # not a blob at all: nothing can be reading it
        if blob.path.is_dir() and not blob.path.is_symlink():
            shutil.rmtree(blob.path)
        else:
            blob.path.unlink(missing_ok=True)
        return CorruptBlob(blob.digest, blob.path, blob.problem, blob.models, removed=True)
    if registry.store.remove_corrupt(blob.digest):
        return CorruptBlob(blob.digest, blob.path, blob.problem, blob.models, removed=True)
    if registry.store.has(blob.digest):
        log.info("blob %s was replaced by a good copy while the store was checked; kept it", blob.digest)
        return None
    return CorruptBlob(blob.digest, blob.path, blob.problem, blob.models, removed=True)  # gone meanwhile


def _incomplete(registry: LocalRegistry) -> tuple[IncompleteModel, ...]:
    out = []
    for rec in registry.list():
        missing = registry.missing_files(rec.id)
        if missing:
            out.append(IncompleteModel(rec.id, rec.manifest.name, tuple(missing)))
    return tuple(out)
