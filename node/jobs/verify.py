"""Verify a merge result by recomputation: pull the merged model and the inputs, recompute a
seeded share of the output tensors from the plan's recipe, compare within tolerance.

    attestation = verify_plan(plan, result, ctx)   # passed or not, with the worst difference

A tensor matches when |recomputed − stored| ≤ tolerance + 2 ulp(output dtype) · |recomputed|
element-wise, after rounding the float32 recomputation to the stored dtype: executors on other
devices differ only by accumulation order, a tampered tensor by far more. Fusion plans are
measured instead (`node.jobs.fusion_jobs.verify_fusion`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from node.jobs.context import JobContext
from node.plans import rules
from node.plans.fusion import is_fusion
from node.plans.model import Attestation, Plan, Result

log = logging.getLogger(__name__)


# Reported as the difference of tensors that cannot be compared (shape, NaN): JSON has no inf.
UNBOUNDED = 1e30


def compare(recomputed, stored, tolerance: float) -> tuple[float, bool]:
    """(max abs difference, within tolerance) of one tensor pair."""
    import torch

    if tuple(recomputed.shape) != tuple(stored.shape):
        return UNBOUNDED, False
    if not stored.is_floating_point():
        same = bool(torch.equal(recomputed.to(stored.dtype), stored))
        return (0.0 if same else UNBOUNDED), same
    ref = recomputed.to(stored.dtype).float()
    diff = torch.nan_to_num((ref - stored.float()).abs(), nan=UNBOUNDED, posinf=UNBOUNDED)
    if not diff.numel():
        return 0.0, True
    eps = torch.finfo(stored.dtype).eps
    ok = bool((diff <= tolerance + 2 * eps * ref.abs()).all())
    return min(float(diff.max()), UNBOUNDED), ok


def check_tensors(recipe, merged_dir: Path, names: list[str], tolerance: float, device: str = "cpu",
                  ) -> tuple[float, list[str]]:
    """Recompute `names` and compare them with the merged folder: (worst diff, failing names)."""
    from merge.executor import compute_tensors
    from merge.io import ModelReader

    recomputed = compute_tensors(recipe, names, device=device)
    worst, failing = 0.0, []
    with ModelReader(merged_dir) as reader:
        for name in names:
            diff, ok = compare(recomputed[name], reader.get_raw(name), tolerance)
            worst = max(worst, diff)
            if not ok:
                failing.append(name)
    return worst, failing


def fetch_signed_result(plan: Plan, result: Result, executor: str, ctx: JobContext, work: Path,
                        recipe: dict) -> tuple[Path, Attestation | None]:
    """Fetch the merged model; a failing attestation instead when it is not signed by the committed
    executor or its signed provenance does not name this plan and `recipe`."""
    merged_dir = ctx.fetch(result.model_id, work / "merged", first=[result.address])
    manifest = ctx.manifest(result.model_id)
    prov = manifest.get("provenance") or {}
    if manifest.get("publisher", {}).get("key_id") != executor:
        return merged_dir, Attestation(plan.plan_id, result.model_id, (), 0.0, False,
                                       "the merged model is not signed by the plan's committed executor")
    if prov.get("plan_id") != plan.plan_id or prov.get("recipe") != recipe:
        return merged_dir, Attestation(plan.plan_id, result.model_id, (), 0.0, False,
                                       "the merged model's signed provenance does not name this plan and recipe")
    return merged_dir, None


def verify_plan(plan: Plan, result: Result, executor: str, ctx: JobContext) -> Attestation:
    """Attest `result` of `plan`, whose committed executor has key id `executor`."""
    if is_fusion(plan.recipe):  # training cannot be recomputed cheaply: measure held-out loss instead
        from node.jobs.fusion_jobs import verify_fusion

        return verify_fusion(plan, result, executor, ctx)
    from merge.io import ModelReader
    from merge.recipe import load_recipe

    work = ctx.work_dir(plan.plan_id, "verify")
    merged_dir, refusal = fetch_signed_result(plan, result, executor, ctx, work, dict(plan.recipe))
    if refusal is not None:
        return refusal
    paths = {mid: str(ctx.fetch(mid, work / "inputs")) for mid in plan.model_ids()}
    recipe = load_recipe(dict(plan.recipe)).with_models(paths)
    with ModelReader(merged_dir) as reader:
        all_names = reader.names()
    seed = f"{plan.plan_id}|{result.model_id}|{ctx.key_id}"
    names = rules.spot_check_names(all_names, plan.verification.spot_check, seed)
    worst, failing = check_tensors(recipe, merged_dir, names, plan.verification.tolerance, device=ctx.device)
    shutil.rmtree(work, ignore_errors=True)
    if failing:
        detail = f"{len(failing)} of {len(names)} tensors differ, e.g. {failing[0]} (max abs diff {worst:.3g})"
        return Attestation(plan.plan_id, result.model_id, tuple(names), worst, False, detail)
    log.info("plan %s: %d tensors of %s match (max abs diff %.3g)", plan.plan_id, len(names), result.model_id, worst)
    return Attestation(plan.plan_id, result.model_id, tuple(names), worst, True,
                       f"{len(names)} of {len(all_names)} tensors recomputed and matched")
