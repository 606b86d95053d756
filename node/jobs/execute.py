"""Execute a committed plan: fetch the inputs, run the merge (GPU when present, else CPU), sign
and register the result as a `merged` model whose manifest records the provenance.

    result = execute_plan(plan, ctx, progress)   # a Result naming the new model id

A fusion plan (recipe with `target` + `sources`) goes to `node.jobs.fusion_jobs.execute_fusion`.

Provenance (inside the signed manifest): plan id, input ids, the exact recipe, mergenet version,
device and the executor's key id — everything a verifier needs to recompute any tensor.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable

from node.jobs.context import JobContext
from node.plans.fusion import is_fusion
from node.plans.model import Plan, Result

log = logging.getLogger(__name__)


def provenance(plan: Plan, device: str, executor: str, version: str) -> dict:
    return {"plan_id": plan.plan_id, "inputs": plan.model_ids(), "recipe": dict(plan.recipe),
            "mergenet_version": version, "device": device, "executor": executor}


def execute_plan(plan: Plan, ctx: JobContext, progress: Callable[[int, int], None] | None = None) -> Result:
    if is_fusion(plan.recipe):  # heterogeneous: train the target on the sources' distributions
        from node.jobs.fusion_jobs import execute_fusion

        return execute_fusion(plan, ctx, progress)
    from merge.executor import run_merge
    from merge.recipe import load_recipe
    from registry.local import LocalRegistry, mergenet_version

    start = time.perf_counter()
    work = ctx.work_dir(plan.plan_id, "execute")
    paths = {mid: str(ctx.fetch(mid, work / "inputs")) for mid in plan.model_ids()}
    recipe = load_recipe(dict(plan.recipe)).with_models(paths)
    out = work / f"merged-{plan.digest_hex[:12]}"
    merged = run_merge(recipe, out, device=ctx.device, progress=progress, inputs={p: m for m, p in paths.items()},
                       version=mergenet_version())
    base = next((i.model_id for i in plan.inputs if i.role == "base"), None)
    registry = LocalRegistry(ctx.home)
    try:
        record = registry.submit(out, kind="merged", base=base, license=plan.license, policy="open",
                                 name=f"merged-{plan.digest_hex[:12]}", tags=("mergenet-plan",),
                                 provenance=provenance(plan, merged.device, ctx.key_id, mergenet_version()))
    finally:
        registry.close()
    ctx.announce([record.id])
    shutil.rmtree(work, ignore_errors=True)  # the store keeps every blob, inputs and result
    log.info("plan %s merged into %s on %s in %.1fs", plan.plan_id, record.id, merged.device, merged.seconds)
    return Result(plan.plan_id, record.id, ctx.address, merged.device, round(time.perf_counter() - start, 3))
