"""What this node's own registry offers to the network, read straight from its index and store.

    view = LocalView.open(home)
    view.ids(); view.summaries("expert"); view.ad(model_id); view.blob_path(digest_hex)

Read-only: the node serves what `submit` and `pull` put in the home, and sees new models at
once because the index is a shared SQLite database.
"""

from __future__ import annotations

import json
from pathlib import Path

from registry.home import Home, as_home
from registry.index import Index
from registry.services.ads import MANIFEST_NAME, SignedAd
from registry.services.hooks import ModelSummary
from registry.statements import strip_sha256
from registry.store import BlobStore


class LocalView:
    def __init__(self, index: Index, store: BlobStore) -> None:
        self.index = index
        self.store = store

    @classmethod
    def open(cls, home: Home | Path) -> LocalView:
        home = as_home(home).ensure()
        return cls(Index(home.db_path), BlobStore(home.store_dir, home.tmp_dir))

    def ids(self) -> list[str]:
        return [row.id for row in self.index.list()]

    def summaries(self, kind: str | None = None) -> list[ModelSummary]:
        return [ModelSummary(model_id=row.id, name=row.name, kind=row.kind, publisher_key_id=row.signer,
                             size=sum(size for _, size in self.index.files(row.id).values()), local=True)
                for row in self.index.list(kind)]

    def ad(self, model_id: str) -> SignedAd | None:
        """The model's signed ad as stored (manifest bytes exactly as signed), None if not held."""
        row = self.index.get(model_id)
        if row is None:
            return None
        files = {rel: (strip_sha256(sha), size) for rel, (sha, size) in self.index.files(model_id).items()}
        manifest = row.manifest.encode()
        if MANIFEST_NAME in files and self.store.has(files[MANIFEST_NAME][0]):
            manifest = self.store.path(files[MANIFEST_NAME][0]).read_bytes()
        attestations = tuple(json.dumps(a, sort_keys=True).encode() for a in self.index.attestations(model_id))
        return SignedAd(model_id=model_id, manifest=manifest, signature=row.signature,
                        files=tuple((rel, sha, size) for rel, (sha, size) in sorted(files.items())),
                        attestations=attestations)

    def blob_path(self, digest_hex: str) -> Path | None:
        """The stored blob for a digest that belongs to a held model; None otherwise."""
        if not (self.index.models_with_blob(digest_hex) or self.index.models_with_blob("sha256:" + digest_hex)):
            return None
        path = self.store.path(digest_hex)
        return path if path.is_file() else None
