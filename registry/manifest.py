"""`mergenet.json`: what a model is, inside the signed folder so model.sig covers it.

    manifest = Manifest(kind="expert", name="math-expert", ...); raw = manifest.to_json()
    manifest = Manifest.from_json(raw)   # BadModelError naming the offending field

Serialization is deterministic (sorted keys, fixed indent), so the same manifest always has
the same bytes and therefore the same file digest and model id.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from registry.errors import BadModelError
from registry.identity import key_id_of
from registry.ids import PREFIX, ModelId, digest_hex

MANIFEST_FORMAT = "https://mergenet.dev/manifest/v1"
KINDS = ("base", "expert", "merged", "adapter")  # base: a foundation model experts derive from; adapter: a LoRA
POLICIES = ("open", "consent", "closed")
SPDX_RE = re.compile(r"^[A-Za-z0-9.+\-() :]{1,128}$")  # ids and simple expressions (AND/OR/WITH)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME = 200


@dataclass(frozen=True)
class Manifest:
    kind: str
    name: str
    model_type: str
    architecture_fingerprint: str
    tokenizer_fingerprint: str | None
    tensors: dict[str, dict[str, str]]  # weight file → tensor name → sha256 hex of its bytes
    publisher_key_id: str
    publisher_public_key: str  # PEM (SubjectPublicKeyInfo)
    created: str  # ISO 8601 UTC
    base_model: str | None = None  # model id the task vectors are relative to
    tags: tuple[str, ...] = ()
    license: str | None = None  # SPDX
    policy: str = "open"
    eval_scores: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None  # merged models: plan id, inputs, recipe, version, device, executor
    mergenet_version: str = ""
    # Byte size of every signed file but the manifest itself: a puller caps each stream at it, so
    # a holder cannot fill a disk with bytes the signature was never going to match.
    sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "format": MANIFEST_FORMAT,
            "kind": self.kind,
            "name": self.name,
            "architecture": {"model_type": self.model_type, "fingerprint": self.architecture_fingerprint},
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "base_model": self.base_model,
            "tags": list(self.tags),
            "license": self.license,
            "policy": self.policy,
            "tensors": self.tensors,
            "eval_scores": self.eval_scores,
            "publisher": {"key_id": self.publisher_key_id, "public_key_pem": self.publisher_public_key},
            "created": self.created,
            "provenance": self.provenance,
            "mergenet_version": self.mergenet_version,
        }
        if self.sizes:  # absent from manifests written before sizes were signed: their bytes stay the same
            doc["sizes"] = self.sizes
        return doc

    def to_json(self) -> bytes:
        """Deterministic bytes for mergenet.json."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str, label: str = "mergenet.json") -> Manifest:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadModelError(f"{label} does not parse as JSON: {' '.join(str(exc).split())[:100]}") from None
        return cls.from_dict(doc, label)

    @classmethod
    def from_dict(cls, doc: Any, label: str = "mergenet.json") -> Manifest:
        v = _Validator(doc, label)
        if doc.get("format") != MANIFEST_FORMAT:
            raise BadModelError(f"{label}: field 'format' must be {MANIFEST_FORMAT!r}")
        arch = v.obj("architecture")
        publisher = v.obj("publisher")
        manifest = cls(
            kind=v.choice("kind", KINDS),
            name=v.text("name"),
            model_type=_Validator(arch, label, "architecture.").text("model_type"),
            architecture_fingerprint=_Validator(arch, label, "architecture.").digest("fingerprint"),
            tokenizer_fingerprint=v.digest("tokenizer_fingerprint", optional=True),
            base_model=v.digest("base_model", optional=True),
            tags=v.tags("tags"),
            license=v.license("license"),
            policy=v.choice("policy", POLICIES),
            tensors=v.tensors("tensors"),
            eval_scores=v.scores("eval_scores"),
            publisher_key_id=_Validator(publisher, label, "publisher.").hex("key_id"),
            publisher_public_key=_Validator(publisher, label, "publisher.").text("public_key_pem", limit=4096),
            created=v.text("created"),
            provenance=v.optional_obj("provenance"),
            mergenet_version=v.text("mergenet_version", allow_empty=True),
            sizes=v.sizes("sizes"),
        )
        try:
            actual = key_id_of(manifest.publisher_public_key)
        except BadModelError as exc:
            raise BadModelError(f"{label}: field 'publisher.public_key_pem' is unusable: {exc}") from None
        if actual != manifest.publisher_key_id:
            raise BadModelError(f"{label}: field 'publisher.key_id' does not match publisher.public_key_pem")
        return manifest


class _Validator:
    """Typed field access that names the offending field in every error."""

    def __init__(self, doc: Any, label: str, prefix: str = ""):
        if not isinstance(doc, dict):
            raise BadModelError(f"{label}: {'field ' + prefix.rstrip('.') if prefix else 'document'} must be an object")
        self.doc, self.label, self.prefix = doc, label, prefix

    def fail(self, key: str, what: str) -> BadModelError:
        return BadModelError(f"{self.label}: field '{self.prefix}{key}' {what}")

    def text(self, key: str, allow_empty: bool = False, limit: int = MAX_NAME) -> str:
        value = self.doc.get(key)
        if not isinstance(value, str) or (not value and not allow_empty) or len(value) > limit:
            raise self.fail(key, f"must be a {'' if allow_empty else 'non-empty '}string of at most {limit} characters")
        return value

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.doc.get(key)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)} (got {value!r})")
        return value

    def digest(self, key: str, optional: bool = False) -> str | None:
        value = self.doc.get(key)
        if value is None and optional:
            return None
        if not ModelId.looks_like(value) or digest_hex(value) != value[len(PREFIX):]:
            raise self.fail(key, "must be 'sha256:' followed by 64 lower-case hex digits")
        return ModelId(value)

    def hex(self, key: str) -> str:
        value = self.doc.get(key)
        if not isinstance(value, str) or not HEX_RE.match(value):
            raise self.fail(key, "must be 64 lower-case hex digits")
        return value

    def obj(self, key: str) -> dict[str, Any]:
        value = self.doc.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "must be an object")
        return value

    def optional_obj(self, key: str) -> dict[str, Any] | None:
        return None if self.doc.get(key) is None else self.obj(key)

    def tags(self, key: str) -> tuple[str, ...]:
        value = self.doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in value):
            raise self.fail(key, "must be a list of short strings")
        return tuple(value)

    def license(self, key: str) -> str | None:
        value = self.doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not SPDX_RE.match(value):
            raise self.fail(key, "must be an SPDX license identifier or expression such as Apache-2.0")
        return value

    def tensors(self, key: str) -> dict[str, dict[str, str]]:
        value = self.obj(key)
        for file, digests in value.items():
            if not isinstance(digests, dict) or not all(isinstance(n, str) and isinstance(d, str) and HEX_RE.match(d)
                                                        for n, d in digests.items()):
                raise self.fail(f"{key}.{file}", "must map tensor names to 64-hex sha256 digests")
        return value

    def sizes(self, key: str) -> dict[str, int]:
        value = self.doc.get(key, {})
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for k, n in value.items()):
            raise self.fail(key, "must map file names to non-negative byte counts")
        return dict(value)

    def scores(self, key: str) -> dict[str, float]:
        value = self.doc.get(key, {})
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s)
                for k, s in value.items()):
            raise self.fail(key, "must map names to finite numbers")
        return {k: float(s) for k, s in value.items()}


def validate_choice(value: str, options: tuple[str, ...], what: str) -> str:
    """For arguments (CLI, API) before a manifest is built."""
    if value not in options:
        raise BadModelError(f"{what} must be one of {', '.join(options)} (got {value!r})")
    return value


def validate_license(value: str | None) -> str | None:
    if value is not None and not SPDX_RE.match(value):
        raise BadModelError(f"license {value!r} is not an SPDX identifier such as Apache-2.0 or MIT")
    return value
