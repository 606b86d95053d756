"""Execute and verify fusion (heterogeneous) plans; see `node.plans.fusion` for the design.

    result = execute_fusion(plan, ctx, progress)        # run_fusion on the plan's training lines
    att = verify_fusion(plan, result, executor, ctx)     # measure held-out loss, merged vs target

The executor fetches the models with the same code as a weight merge, writes the plan's data
(less the held-out lines) into its work folder and runs `merge.fusion.run_fusion`; the result is
a `merged` model whose signed provenance names the plan, the inputs, the recipe (without the data
bytes), the data's sha256, version, device and executor. A verifier cannot recompute training
cheaply, so it measures: response cross-entropy in nats per character on the held-out lines, for
the merged model and the original target, judged by `node.plans.fusion.verdict`. Before that it
applies the whole-folder rule: config, generation config, tokenizer files and tensor layout are
those `merge.fusion.expected_model_files` writes for the target (training changes tensor values
only), and the card is one `merge.fusion.card.card_pattern` allows (only measured numbers free).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from node.jobs.claims import plan_submission
from node.jobs.context import JobContext
from node.jobs.folder import folder_mismatch, weight_layout
from node.jobs.merge_jobs import plan_inputs
from node.jobs.results import SignedResult, fetch_signed_result
from node.ops.producing import fuse_and_submit
from node.plans import fusion
from node.plans.model import Attestation, Plan, Result

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
    submission = plan_submission(plan, ctx.key_id)
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


def fused_folder_mismatch(plan: Plan, signed: SignedResult, target_dir: Path, train: Path, work: Path) -> str | None:
    """The whole-folder rule for a fused result: every file but the tensor values as `run_fusion`
    writes it for the plan's target, the card as `model_card` writes it up to measured numbers."""
    from merge.fusion import load_recipe
    from merge.fusion.card import card_pattern
    from merge.fusion.data import file_sha256, load_examples
    from merge.fusion.pipeline import expected_model_files
    from merge.outputs import CARD_FILE

    reference = work / "reference"
    expected_model_files(target_dir, reference)
    weights = weight_layout(reference)
    files = {name: (reference / name).read_bytes() for name in os.listdir(reference) if name not in weights}
    card = (signed.folder / CARD_FILE).read_bytes() if (signed.folder / CARD_FILE).is_file() else b""
    files[CARD_FILE] = card  # compared below by pattern, since training measured its numbers
    problem = folder_mismatch(signed.folder, files, weights, signed.manifest.get("tokenizer_fingerprint"))
    if problem:
        return problem
    examples = len(load_examples(train))
    if signed.provenance.train_examples != examples:
        return (f"the merged model's signed provenance says train_examples {signed.provenance.train_examples}, "
                f"the plan's training data has {examples}")
    recipe = load_recipe({**fusion.settings(plan.recipe), "data": str(train)})
    pattern = card_pattern(recipe, examples=examples, data_sha256=file_sha256(train),
                           device=signed.provenance.device, version=signed.provenance.mergenet_version,
                           license=plan.license)
    if not pattern.fullmatch(card.decode("utf-8", errors="replace")):
        return f"{CARD_FILE} is not the card run_fusion writes for this plan (other text, claims or inputs)"
    return None


def verify_fusion(plan: Plan, result: Result, executor: str, ctx: JobContext) -> Attestation:
    """Attest `result` of fusion `plan` by measurement, whose committed executor is `executor`."""
    work = ctx.work_dir(plan.plan_id, "verify")
    try:
        signed = fetch_signed_result(plan, result, executor, ctx, work, fusion.provenance_recipe(plan.recipe))
        if isinstance(signed, Attestation):
            return signed
        train, heldout = _split(plan, work)
        target = next(i.model_id for i in plan.inputs if i.role == "target")
        target_dir = ctx.fetch(target, work / "inputs")
        problem = fused_folder_mismatch(plan, signed, target_dir, train, work)
        if problem:
            return Attestation(plan.plan_id, result.model_id, (), 0.0, False, problem)
        max_length, batch = int(plan.recipe.get("max_length", 512)), int(plan.recipe.get("batch_size", 8))
        merged_loss = heldout_loss(signed.folder, heldout, max_length, batch, ctx.device)
        target_loss = heldout_loss(target_dir, heldout, max_length, batch, ctx.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed, detail = fusion.verdict(merged_loss, target_loss, plan.verification.tolerance)
    scores = {"heldout_loss": fusion.finite(merged_loss), "target_heldout_loss": fusion.finite(target_loss)}
    log.info("plan %s: %s", plan.plan_id, detail)
    return Attestation(plan.plan_id, result.model_id, (), 0.0, passed, detail, scores)
