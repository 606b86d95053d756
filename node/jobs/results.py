"""What every verifier checks before it recomputes or measures anything: the result is signed
by the committed executor, its signed provenance describes this plan, and its manifest claims
what the plan's output gets (`claims`).

    got = fetch_signed_result(plan, result, executor, ctx, work, recipe)
    if isinstance(got, Attestation): return got     # a failing Attestation with the reason
    got.folder, got.manifest, got.provenance

Shared by weight-merge verification (`merge_jobs`) and fusion verification (`fusion_jobs`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.jobs.claims import manifest_mismatch
from node.jobs.context import JobContext
from node.plans import rules
from node.plans.model import Attestation, Plan, Result
from registry.errors import BadModelError
from registry.provenance import Provenance

# The device and version a provenance names are written into the model card a verifier
# regenerates: only plain tokens, so that they cannot carry text into it.
DEVICE_RE = re.compile(r"^[a-z]{1,16}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z.+\-]{0,40}$")


@dataclass(frozen=True)
class SignedResult:
    """A fetched result whose signer, provenance and manifest claims passed the first checks."""

    folder: Path
    manifest: Mapping[str, Any]
    provenance: Provenance


def provenance_mismatch(plan: Plan, prov: Provenance, recipe: Mapping[str, Any]) -> str | None:
    """Why `prov` does not describe `plan` run with `recipe`, or None when it does."""
    if prov.plan_id != plan.plan_id or dict(prov.recipe) != dict(recipe):
        return "the merged model's signed provenance does not name this plan and recipe"
    if prov.is_fusion != plan.is_fusion or (not plan.is_fusion and prov.method != recipe.get("merge_method")):
        return f"the merged model's signed provenance names method {prov.method!r}, not the plan's"
    if sorted(prov.input_ids) != sorted(plan.model_ids()):
        return "the merged model's signed provenance names other inputs than the plan's"
    if tuple(prov.consent_keys) != rules.output_consent_keys(plan):
        return "the merged model's signed provenance names other consenters than the plan's inputs need"
    if not DEVICE_RE.match(prov.device) or not VERSION_RE.match(prov.mergenet_version):
        return (f"the merged model's signed provenance names device {prov.device[:20]!r} and version "
                f"{prov.mergenet_version[:20]!r}; expected a device type and a version number")
    return None


def fetch_signed_result(plan: Plan, result: Result, executor: str, ctx: JobContext, work: Path,
                        recipe: Mapping[str, Any]) -> SignedResult | Attestation:
    """Fetch the merged model; a failing attestation instead when it is not signed by the committed
    executor, its signed provenance does not describe this plan and `recipe`, or its manifest
    claims other than the plan's output gets."""
    merged_dir = ctx.fetch(result.model_id, work / "merged", first=[result.address])
    manifest = ctx.manifest(result.model_id)

    def refuse(detail: str) -> Attestation:
        return Attestation(plan.plan_id, result.model_id, (), 0.0, False, detail)

    if manifest.get("publisher", {}).get("key_id") != executor:
        return refuse("the merged model is not signed by the plan's committed executor")
    try:
        prov = Provenance.from_dict(manifest.get("provenance"))
    except BadModelError as exc:
        return refuse(f"the merged model's signed provenance is unusable: {exc}")
    mismatch = provenance_mismatch(plan, prov, recipe) or manifest_mismatch(plan, manifest)
    return refuse(mismatch) if mismatch else SignedResult(merged_dir, manifest, prov)
