"""The trusted-keys list of a home: publishers whose signatures `--trusted-only` accepts.

    trust = TrustList(home.trust_path); key_id = trust.add(pem_or_key_id)
    trust.contains(key_id); trust.list(); trust.remove(key_id)

A JSON file of {key_id, public_key_pem (when known), added}; rewritten atomically. A PEM
added here also lets `verify` check folders whose manifest lacks the publisher key.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.errors import BadModelError, NotFoundError, RegistryError
from registry.identity import canonical_public_pem, key_id_of, matches_key_id

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key_pem: str | None
    added: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrustList:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, TrustedKey]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise RegistryError(f"{self.path} is not valid JSON; fix or delete it") from None
        try:
            return {k["key_id"]: TrustedKey(k["key_id"], k.get("public_key_pem"), k.get("added", ""))
                    for k in doc["keys"]}
        except (KeyError, TypeError):
            raise RegistryError(f"{self.path} does not hold a trusted-keys list; fix or delete it") from None

    def _save(self, keys: dict[str, TrustedKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"keys": [k.to_dict() for k in sorted(keys.values(), key=lambda k: k.key_id)]},
                                  indent=2) + "\n")
        os.replace(tmp, self.path)

    def add(self, key: str | bytes) -> str:
        """Trust a key given as a PEM (text/bytes) or a 64-hex key id; returns the key id."""
        text = key.decode() if isinstance(key, bytes) else key.strip()
        if "-----BEGIN" in text:
            pem = canonical_public_pem(text).decode()
            key_id = key_id_of(pem)
        elif HEX64.match(text.lower()):
            pem, key_id = None, text.lower()
        else:
            raise BadModelError(f"{text[:80]!r} is neither a 64-hex key id nor a PEM public key")
        with self._lock:
            keys = self._load()
            old = keys.get(key_id)
            keys[key_id] = TrustedKey(key_id, pem or (old.public_key_pem if old else None),
                                      old.added if old else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._save(keys)
        return key_id

    def remove(self, key_id: str) -> str:
        """Stop trusting a key (full id or unique prefix); returns the removed id."""
        with self._lock:
            keys = self._load()
            hits = [k for k in keys if matches_key_id(k, key_id)]
            if len(hits) != 1:
                raise NotFoundError(f"key {key_id} is not in the trusted-keys list" if not hits
                                    else f"key prefix {key_id} is ambiguous; give more digits")
            del keys[hits[0]]
            self._save(keys)
            return hits[0]

    def list(self) -> list[TrustedKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.key_id)

    def contains(self, key_id: str) -> bool:
        with self._lock:
            return key_id in self._load()

    def public_pem(self, key_id: str) -> bytes | None:
        with self._lock:
            k = self._load().get(key_id)
            return k.public_key_pem.encode() if k and k.public_key_pem else None
