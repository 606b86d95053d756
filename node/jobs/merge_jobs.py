"""Weight-merge plans: the executor merges and signs; verifiers recompute a sample of tensors.

    result = execute_merge(plan, ctx, progress)      # a Result naming the new model id
    att = verify_merge(plan, result, executor, ctx)  # passed or not, with the worst difference

The executor runs `node.ops.merge_and_submit` on the plan's inputs fetched by id (never a path),
so the merged manifest carries the same `Provenance` as a CLI merge plus the plan id and the
executor's key. A recomputed tensor matches when |recomputed − stored| ≤ tolerance + 2 ulp(output
dtype) · |recomputed| element-wise, after rounding the float32 recomputation to the stored dtype:
executors on other devices differ only by accumulation order, a tampered tensor by far more.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.jobs.context import JobContext
from node.jobs.results import fetch_signed_result
from node.ops.inputs import InputResolver
from node.ops.producing import Submission, merge_and_submit
from node.plans import rules
from node.plans.model import Attestation, Plan, Result
from registry.ids import PlanId

log = logging.getLogger(__name__)

# Reported as the difference of tensors that cannot be compared (shape, NaN): JSON has no inf.
UNBOUNDED = 1e30


def plan_inputs(ctx: JobContext, work: Path) -> InputResolver:
    """A resolver that fetches a plan's inputs by id and refuses any other reference."""
    return InputResolver(ctx.fetcher(), work / "inputs", allow_paths=False)


def execute_merge(plan: Plan, ctx: JobContext, progress: Callable[[int, int], None] | None = None) -> Result:
    from merge.recipe import load_recipe
    from registry.local import LocalRegistry

    start = time.perf_counter()
    work = ctx.work_dir(plan.plan_id, "execute")
    recipe = load_recipe(dict(plan.recipe))
    base = next((i.model_id for i in plan.inputs if i.role == "base"), None)
    submission = Submission(base=base, license=plan.license, policy=rules.output_policy(plan),
                            name=f"merged-{plan.digest_hex[:12]}",
                            tags=("mergenet-plan",), plan_id=PlanId.parse(plan.plan_id), executor=ctx.key_id,
                            consent_keys=rules.output_consent_keys(plan))
    registry = LocalRegistry(ctx.home)
    try:
        made = merge_and_submit(recipe, work / f"merged-{plan.digest_hex[:12]}", plan_inputs(ctx, work),
                                registry=registry, submit=submission, device=ctx.device, progress=progress)
    finally:
        registry.close()
    ctx.announce([made.record.id])
    shutil.rmtree(work, ignore_errors=True)  # the store keeps every blob, inputs and result
    log.info("plan %s merged into %s on %s in %.1fs", plan.plan_id, made.record.id, made.device, made.result.seconds)
    return Result(plan.plan_id, made.record.id, ctx.address, made.device, round(time.perf_counter() - start, 3))


def compare(recomputed: Any, stored: Any, tolerance: float) -> tuple[float, bool]:
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


def check_tensors(recipe: Any, merged_dir: Path, names: list[str], tolerance: float, device: str = "cpu",
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


def verify_merge(plan: Plan, result: Result, executor: str, ctx: JobContext) -> Attestation:
    """Attest `result` of `plan`, whose committed executor has key id `executor`."""
    from merge.io import ModelReader
    from merge.recipe import load_recipe

    work = ctx.work_dir(plan.plan_id, "verify")
    merged_dir, refusal = fetch_signed_result(plan, result, executor, ctx, work, dict(plan.recipe))
    if refusal is not None:
        return refusal
    recipe = load_recipe(dict(plan.recipe))
    recipe = recipe.with_models(plan_inputs(ctx, work).folders(recipe.model_refs()))
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
