"""What the registry facade hands out: a stored model (`ModelRecord`) and the result of a
successful verification (`VerifiedModel`), both frozen and JSON-ready through `to_dict()`.

    record = LocalRegistry(home).get("sha256:ab12…"); record.manifest.name
    print(json.dumps(record.to_dict()))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from registry.manifest import Manifest


def _bundle_json(signature: bytes) -> Any:
    try:
        return json.loads(signature)
    except ValueError:
        return None


@dataclass(frozen=True)
class ModelRecord:
    id: str
    manifest: Manifest
    signature: bytes  # model.sig
    signer: str  # key id that signed model.sig
    files: dict[str, tuple[str, int]]  # relative path → (sha256 hex, size)
    attestations: tuple[dict[str, Any], ...] = ()
    added: str = ""

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files.values())

    def to_dict(self, trusted: bool | None = None) -> dict[str, Any]:
        out = {
            "id": self.id, "kind": self.kind, "name": self.name, "signer": self.signer,
            "manifest": self.manifest.to_dict(), "signature": _bundle_json(self.signature),
            "files": {p: {"sha256": sha, "size": size} for p, (sha, size) in self.files.items()},
            "size": self.size, "attestations": list(self.attestations), "added": self.added,
        }
        if trusted is not None:
            out["signer_trusted"] = trusted
        return out


@dataclass(frozen=True)
class VerifiedModel:
    id: str
    signer: str
    manifest: Manifest | None  # None for a folder signed by plain model-signing, without mergenet.json
    files: dict[str, str]  # relative path → sha256 hex, all recomputed and matching
    source: str  # the folder, or "store"
    trusted: bool = False

    @property
    def name(self) -> str | None:
        return self.manifest.name if self.manifest else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "ok": True, "signer": self.signer, "signer_trusted": self.trusted, "source": self.source,
            "name": self.name, "kind": self.manifest.kind if self.manifest else None,
            "files": dict(self.files),
        }
