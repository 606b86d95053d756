"""Weight-merge plans: the executor merges and signs; verifiers check the whole folder and
recompute a sample of tensors.

    result = execute_merge(plan, ctx, progress)      # a Result naming the new model id
    att = verify_merge(plan, result, executor, ctx)  # passed or not, with the worst difference

The executor runs `node.ops.merge_and_submit` on the plan's inputs fetched by id (never a path),
so the merged manifest carries the same `Provenance` as a CLI merge plus the plan id and the
executor's key, and the claims `claims.plan_submission` gives. A verifier first demands that
every file but the tensor data is what `merge.outputs.expected_folder` computes from the plan's
recipe and inputs (config, tokenizer, card, shard headers; nothing else), then recomputes a
share of the tensors drawn with randomness it creates when it verifies: the executor signed its
result before that randomness existed, so it cannot tamper only with tensors nobody checks.
A recomputed tensor matches when |recomputed − stored| ≤ tolerance + 2 ulp(output
dtype) · |recomputed| element-wise, after rounding the float32 recomputation to the stored dtype:
executors on other devices differ only by accumulation order, a tampered tensor by far more.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.jobs.claims import plan_submission
from node.jobs.context import JobContext
from node.jobs.folder import folder_mismatch
from node.jobs.results import SignedResult, fetch_signed_result
from node.ops.inputs import InputResolver
from node.ops.producing import merge_and_submit
from node.plans import rules
from node.plans.model import Attestation, Plan, Result, canonical_json

if TYPE_CHECKING:
    from merge.outputs import FolderSpec
    from merge.recipe import Recipe

log = logging.getLogger(__name__)

# Reported as the difference of tensors that cannot be compared (shape, NaN): JSON has no inf.
UNBOUNDED = 1e30
# Bytes of fresh randomness behind each verifier's sample: unguessable, and a new draw every time.
SAMPLE_SEED_BYTES = 32


def plan_inputs(ctx: JobContext, work: Path) -> InputResolver:
    """A resolver that fetches a plan's inputs by id and refuses any other reference."""
    return InputResolver(ctx.fetcher(), work / "inputs", allow_paths=False)


def plan_recipe(plan: Plan) -> Recipe:
    """The plan's recipe (`merge.recipe.Recipe`) with its keys in canonical order. The model card
    prints the recipe, so executor and verifiers must build it alike, whether their plan came
    from the wire (canonical JSON, sorted keys) or from the proposer's own dict."""
    from merge.recipe import load_recipe

    return load_recipe(json.loads(canonical_json(dict(plan.recipe))))


def execute_merge(plan: Plan, ctx: JobContext, progress: Callable[[int, int], None] | None = None) -> Result:
    from registry.local import LocalRegistry

    start = time.perf_counter()
    work = ctx.work_dir(plan.plan_id, "execute")
    recipe = plan_recipe(plan)
    registry = LocalRegistry(ctx.home)
    try:
        made = merge_and_submit(recipe, work / f"merged-{plan.digest_hex[:12]}", plan_inputs(ctx, work),
                                registry=registry, submit=plan_submission(plan, ctx.key_id), device=ctx.device,
                                progress=progress)
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


def expected_folder_of(plan: Plan, signed: SignedResult, runnable: Recipe) -> FolderSpec:
    """What the plan's honest executor writes (`merge.outputs.FolderSpec`): the plan's recipe run
    as `execute_merge` runs it, on the device and version its signed provenance names."""
    from merge.outputs import expected_folder

    # The card names each input by its id, as written in the plan (identify_inputs names ids as they are).
    return expected_folder(runnable, card_recipe=plan_recipe(plan),
                           inputs={mid: mid for mid in plan.model_ids()}, device=signed.provenance.device,
                           version=signed.provenance.mergenet_version, license=plan.license)


def verify_merge(plan: Plan, result: Result, executor: str, ctx: JobContext) -> Attestation:
    """Attest `result` of `plan`, whose committed executor has key id `executor`."""
    work = ctx.work_dir(plan.plan_id, "verify")
    try:
        signed = fetch_signed_result(plan, result, executor, ctx, work, dict(plan.recipe))
        if isinstance(signed, Attestation):
            return signed
        recipe = plan_recipe(plan)
        recipe = recipe.with_models(plan_inputs(ctx, work).folders(recipe.model_refs()))
        spec = expected_folder_of(plan, signed, recipe)
        problem = folder_mismatch(signed.folder, spec.files, spec.weight_files(),
                                  signed.manifest.get("tokenizer_fingerprint"))
        if problem:
            return Attestation(plan.plan_id, result.model_id, (), 0.0, False, problem)
        # Drawn now, after the result was signed and announced; the attestation lists the sample.
        seed = secrets.token_bytes(SAMPLE_SEED_BYTES).hex()
        names = rules.spot_check_names(spec.tensors, plan.verification.spot_check, seed)
        worst, failing = check_tensors(recipe, signed.folder, names, plan.verification.tolerance, device=ctx.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failing:
        detail = f"{len(failing)} of {len(names)} tensors differ, e.g. {failing[0]} (max abs diff {worst:.3g})"
        return Attestation(plan.plan_id, result.model_id, tuple(names), worst, False, detail)
    log.info("plan %s: folder and %d tensors of %s match (max abs diff %.3g)", plan.plan_id, len(names),
             result.model_id, worst)
    return Attestation(plan.plan_id, result.model_id, tuple(names), worst, True,
                       f"every file as the recipe writes it; {len(names)} of {len(spec.tensors)} tensors "
                       "recomputed and matched")
