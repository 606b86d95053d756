"""Provenance: what a merged model's signed manifest says about how it was made.

    prov = Provenance(method="ties", recipe=recipe_dict, inputs=(InputRef("base", ref, mid),),
                      device="cpu", plan_id=plan_id, executor=key_id)
    manifest_field = prov.to_dict();  Provenance.from_dict(manifest_field)  # BadModelError if malformed

Every merged model carries one shape, whether it was merged or fused, from the command line or
by a plan's executor: the method (a merge method or `fusion`), the recipe, its inputs (by
verified model id where one is known, else by the reference and its weight digests), the
mergenet version and the device; a plan's result adds the plan id and the executor's key id,
a fusion the sha256 of its data. Verifiers compare these fields with the plan they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.errors import BadIdError, BadModelError
from registry.ids import ModelId, PlanId
from registry.version import MERGENET_VERSION

FUSION = "fusion"
ROLES = ("base", "expert", "tokenizer", "target", "source", "adapter")  # adapter: a LoRA applied to an input


@dataclass(frozen=True)
class InputRef:
    """One input as the recipe names it: `ref` as written, `id` when it is a known signed model,
    else `digests` ("name sha256:…, …") of its weight files so the exact bytes are still named."""

    role: str
    ref: str
    id: ModelId | None = None
    digests: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"role": self.role, "ref": self.ref, "id": self.id}
        if self.digests:
            doc["digests"] = self.digests
        return doc


@dataclass(frozen=True)
class Provenance:
    method: str
    recipe: Mapping[str, Any]
    inputs: tuple[InputRef, ...]
    device: str
    mergenet_version: str = MERGENET_VERSION
    plan_id: PlanId | None = None
    executor: str | None = None
    data_sha256: str | None = None
    train_examples: int | None = None
    # Whose consent a plan on this model needs (its policy is `consent` when set): the original
    # publishers of its `consent` inputs, so consent cannot be laundered through a merge.
    consent_keys: tuple[str, ...] = ()

    @property
    def input_ids(self) -> list[str]:
        """Each input by model id where known, else by its reference (the `inputs` field)."""
        return [i.id or i.ref for i in self.inputs]

    @property
    def is_fusion(self) -> bool:
        return self.method == FUSION

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "method": self.method, "recipe": dict(self.recipe), "inputs": self.input_ids,
            "input_roles": [i.to_dict() for i in self.inputs], "mergenet_version": self.mergenet_version,
            "device": self.device,
        }
        optional = {"plan_id": self.plan_id, "executor": self.executor, "data_sha256": self.data_sha256,
                    "train_examples": self.train_examples}
        doc.update({k: v for k, v in optional.items() if v is not None})
        if self.consent_keys:
            doc["consent_keys"] = list(self.consent_keys)
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> Provenance:
        """Parse a manifest's `provenance` field (from a peer: every field is checked)."""
        if not isinstance(doc, Mapping):
            raise BadModelError("provenance must be an object")
        try:
            roles = doc.get("input_roles")
            if not isinstance(roles, list):
                raise BadModelError("provenance.input_roles must be a list")
            inputs = tuple(_input(r) for r in roles)
            plan_id = doc.get("plan_id")
            return cls(
                method=_str(doc, "method"), recipe=_obj(doc, "recipe"), inputs=inputs, device=_str(doc, "device"),
                mergenet_version=_str(doc, "mergenet_version"),
                plan_id=PlanId.parse(plan_id) if plan_id is not None else None,
                executor=_opt_str(doc, "executor"), data_sha256=_opt_str(doc, "data_sha256"),
                train_examples=doc.get("train_examples") if isinstance(doc.get("train_examples"), int) else None,
                consent_keys=_keys(doc.get("consent_keys", [])),
            )
        except BadIdError as exc:
            raise BadModelError(f"provenance: {exc}") from None


def _input(doc: Any) -> InputRef:
    if not isinstance(doc, Mapping) or doc.get("role") not in ROLES or not isinstance(doc.get("ref"), str):
        raise BadModelError(f"provenance.input_roles entry {str(doc)[:80]!r} needs a role ({'/'.join(ROLES)}) and ref")
    mid = doc.get("id")
    return InputRef(doc["role"], doc["ref"], ModelId.parse(mid) if mid is not None else None,
                    _opt_str(doc, "digests"))


def _keys(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
        raise BadModelError("provenance.consent_keys must be a list of key ids")
    return tuple(value)


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise BadModelError(f"provenance.{key} must be a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise BadModelError(f"provenance.{key} must be a string")
    return value


def _obj(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, Mapping):
        raise BadModelError(f"provenance.{key} must be an object")
    return dict(value)
