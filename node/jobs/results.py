"""What every verifier checks before it recomputes or measures anything: the result is signed
by the committed executor and its signed provenance describes this plan.

    merged_dir, refusal = fetch_signed_result(plan, result, executor, ctx, work, recipe)
    if refusal is not None: return refusal          # a failing Attestation with the reason

Shared by weight-merge verification (`merge_jobs`) and fusion verification (`fusion_jobs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.jobs.context import JobContext
from node.plans.model import Attestation, Plan, Result
from registry.errors import BadModelError
from registry.provenance import Provenance


def provenance_mismatch(plan: Plan, prov: Provenance, recipe: Mapping[str, Any]) -> str | None:
    """Why `prov` does not describe `plan` run with `recipe`, or None when it does."""
    if prov.plan_id != plan.plan_id or dict(prov.recipe) != dict(recipe):
        return "the merged model's signed provenance does not name this plan and recipe"
    if prov.is_fusion != plan.is_fusion or (not plan.is_fusion and prov.method != recipe.get("merge_method")):
        return f"the merged model's signed provenance names method {prov.method!r}, not the plan's"
    if sorted(prov.input_ids) != sorted(plan.model_ids()):
        return "the merged model's signed provenance names other inputs than the plan's"
    return None


def fetch_signed_result(plan: Plan, result: Result, executor: str, ctx: JobContext, work: Path,
                        recipe: Mapping[str, Any]) -> tuple[Path, Attestation | None]:
    """Fetch the merged model; a failing attestation instead when it is not signed by the committed
    executor or its signed provenance does not describe this plan and `recipe`."""
    merged_dir = ctx.fetch(result.model_id, work / "merged", first=[result.address])
    manifest = ctx.manifest(result.model_id)

    def refuse(detail: str) -> tuple[Path, Attestation]:
        return merged_dir, Attestation(plan.plan_id, result.model_id, (), 0.0, False, detail)

    if manifest.get("publisher", {}).get("key_id") != executor:
        return refuse("the merged model is not signed by the plan's committed executor")
    try:
        prov = Provenance.from_dict(manifest.get("provenance"))
    except BadModelError as exc:
        return refuse(f"the merged model's signed provenance is unusable: {exc}")
    mismatch = provenance_mismatch(plan, prov, recipe)
    return (refuse(mismatch) if mismatch else (merged_dir, None))

