"""Execute and verify fusion (heterogeneous) plans; see `node.plans.fusion` for the design.

    result = execute_fusion(plan, ctx, progress)        # run_fusion on the plan's training lines
    att = verify_fusion(plan, result, executor, ctx)     # measure held-out loss, merged vs target

The executor fetches the models with the same code as a weight merge, writes the plan's data
(less the held-out lines) into its work folder and runs `merge.fusion.run_fusion`; the result is
a `merged` model whose signed provenance names the plan, the inputs, the recipe (without the data
bytes), the data's sha256, version, device and executor. A verifier cannot recompute training
cheaply, so it measures: response cross-entropy in nats per character on the held-out lines, for
the merged model and the original target, judged by `node.plans.fusion.verdict`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from node.jobs.context import JobContext
from node.jobs.merge_jobs import plan_inputs
from node.jobs.results import fetch_signed_result
from node.ops.producing import Submission, fuse_and_submit
from node.plans import fusion, rules
from node.plans.model import Attestation, Plan, Result
from registry.ids import PlanId

log = logging.getLogger(__name__)


def _split(plan: Plan, work: Path) -> tuple[Path, Path]:
    """The plan's training and held-out lines as JSONL files in `work`."""
    fusion.validate(plan.recipe)
    train, held = fusion.split_lines(fusion.data_bytes(plan.recipe), fusion.holdout_share(plan.recipe),
                                     plan.recipe["data_sha256"])
    (work / "train.jsonl").write_bytes(train)
    (work / "heldout.jsonl").write_bytes(held)
    return work / "train.jsonl", work / "heldout.jsonl"


def execute_fusion(plan: Plan, ctx: JobContext, progress: Callable[[int, int], None] | None = None) -> Result:
    from merge.fusion import load_recipe
    from registry.local import LocalRegistry

    start = time.perf_counter()
    work = ctx.work_dir(plan.plan_id, "execute")
    train, _ = _split(plan, work)
    # Model refs stay ids (the model card names them); the resolver fetches them by id only.
    recipe = load_recipe({**fusion.settings(plan.recipe), "data": str(train)})
    out = work / f"merged-{plan.digest_hex[:12]}"
    shutil.rmtree(out, ignore_errors=True)  # left by a run interrupted before submit; steps are reused
    target = next(i.model_id for i in plan.inputs if i.role == "target")
    submission = Submission(base=target, license=plan.license, policy=rules.output_policy(plan),
                            name=f"fused-{plan.digest_hex[:12]}",
                            tags=("mergenet-plan", "fusion"), plan_id=PlanId.parse(plan.plan_id),
                            executor=ctx.key_id, consent_keys=rules.output_consent_keys(plan))
    registry = LocalRegistry(ctx.home)
    try:
        made = fuse_and_submit(recipe, out, plan_inputs(ctx, work), registry=registry, submit=submission,
                               device=ctx.device, work_dir=work / "fusion", progress=progress,
                               recorded_recipe=fusion.provenance_recipe(plan.recipe),
                               recorded_data_sha256=plan.recipe["data_sha256"])
    finally:
        registry.close()
    ctx.announce([made.record.id])
    shutil.rmtree(work, ignore_errors=True)
    log.info("plan %s fused into %s on %s", plan.plan_id, made.record.id, made.device)
    return Result(plan.plan_id, made.record.id, ctx.address, made.device, round(time.perf_counter() - start, 3))


def heldout_loss(model_dir: Path, heldout: Path, max_length: int, batch_size: int, device: str) -> float:
    """Response cross-entropy in nats per character over the held-out examples (inf if not finite)."""
    from merge.device import pick_device
    from merge.fusion.capture import capture_model
    from merge.fusion.data import load_examples

    cap = capture_model(model_dir, load_examples(heldout), top_k=1, max_length=max_length, batch_size=batch_size,
                        device=str(pick_device(device)))
    loss = float(cap.ce_sum.sum() / cap.n_chars.sum().clamp(min=1.0))
    return loss if math.isfinite(loss) else float("inf")


def verify_fusion(plan: Plan, result: Result, executor: str, ctx: JobContext) -> Attestation:
    """Attest `result` of fusion `plan` by measurement, whose committed executor is `executor`."""
    work = ctx.work_dir(plan.plan_id, "verify")
    merged_dir, refusal = fetch_signed_result(plan, result, executor, ctx, work, fusion.provenance_recipe(plan.recipe))
    if refusal is not None:
        return refusal
    _, heldout = _split(plan, work)
    target = next(i.model_id for i in plan.inputs if i.role == "target")
    target_dir = ctx.fetch(target, work / "inputs")
    max_length, batch = int(plan.recipe.get("max_length", 512)), int(plan.recipe.get("batch_size", 8))
    merged_loss = heldout_loss(merged_dir, heldout, max_length, batch, ctx.device)
    target_loss = heldout_loss(target_dir, heldout, max_length, batch, ctx.device)
    shutil.rmtree(work, ignore_errors=True)
    passed, detail = fusion.verdict(merged_loss, target_loss, plan.verification.tolerance)
    scores = {"heldout_loss": fusion.finite(merged_loss), "target_heldout_loss": fusion.finite(target_loss)}
    log.info("plan %s: %s", plan.plan_id, detail)
    return Attestation(plan.plan_id, result.model_id, (), 0.0, passed, detail, scores)
