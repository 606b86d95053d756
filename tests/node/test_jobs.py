"""Jobs with real models, a real registry and real signatures (no network): an executor merges a
plan and signs the result with provenance; a verifier recomputes a freshly drawn share of
tensors and passes it, and fails a result whose tensors were tampered with and re-signed.
(The whole-folder rule and the sample's randomness: test_verify_folder.py.)"""

from __future__ import annotations

import shutil

import pytest
import torch

from node.jobs.context import JobContext
from node.jobs.merge_jobs import UNBOUNDED, compare
from node.jobs.node_jobs import execute_plan, verify_plan
from node.jobs.runner import JobRunner
from node.plans.model import Plan, PlanInput, VerificationPolicy
from registry.local import LocalRegistry
from tests.node.forge import shift_tensors, submit_as_executor


@pytest.fixture
def setup(model_copy, tmp_path):
    home = tmp_path / "exec-home"
    reg = LocalRegistry(home)
    try:
        base = reg.submit(model_copy("llama", 0), license="MIT").id
        e1 = reg.submit(model_copy("llama", 1), base=base, license="MIT").id
        e2 = reg.submit(model_copy("llama", 2), base=base, license="MIT").id
        key = reg.identity().key_id
    finally:
        reg.close()
    recipe = {"merge_method": "ties", "base_model": base, "dtype": "float32", "parameters": {"normalize": True},
              "models": [{"model": e1, "parameters": {"weight": 0.6, "density": 0.5}},
                         {"model": e2, "parameters": {"weight": 0.4, "density": 0.5}}]}
    plan = Plan.new(proposer=key, proposer_address="here:1", recipe=recipe, license="MIT",
                    inputs=[PlanInput(base, "base"), PlanInput(e1, "expert"), PlanInput(e2, "expert")],
                    verification=VerificationPolicy(verifiers=1, spot_check=0.2))
    ctx = JobContext(home, key, lambda: "here:1", device="cpu")
    return plan, ctx


def test_execute_then_verify_passes(setup):
    plan, ctx = setup
    seen = []
    result = execute_plan(plan, ctx, lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] > 0
    manifest = ctx.manifest(result.model_id)
    assert manifest["kind"] == "merged" and manifest["license"] == "MIT" and manifest["policy"] == "open"
    assert manifest["eval_scores"] == {} and manifest["base_model"] == plan.inputs[0].model_id
    prov = manifest["provenance"]
    assert prov["plan_id"] == plan.plan_id and prov["recipe"] == plan.recipe and prov["executor"] == ctx.key_id
    assert prov["inputs"] == plan.model_ids() and prov["device"] == "cpu"
    att = verify_plan(plan, result, ctx.key_id, ctx)
    assert att.passed, att.detail
    assert att.max_abs_diff == 0.0 and len(att.tensors) >= 1


def test_verifier_catches_tampered_tensor(setup, tmp_path):
    plan, ctx = setup
    honest = execute_plan(plan, ctx)
    reg = LocalRegistry(ctx.home)
    try:
        folder = reg.materialize(honest.model_id, tmp_path / "tampered")
        # A subtle, everywhere edit (every other file as written): any spot-check sample must catch it.
        shift_tensors(folder / "model.safetensors", 1e-2)
        tampered = submit_as_executor(reg, folder, plan, ctx.key_id)
    finally:
        reg.close()
    result = honest.__class__(plan.plan_id, tampered, "here:1", "cpu", 0.1)
    att = verify_plan(plan, result, ctx.key_id, ctx)
    assert not att.passed and "tensors differ" in att.detail
    assert att.max_abs_diff == pytest.approx(1e-2, rel=1e-3)
    # Signed by someone other than the committed executor: refused before any recomputation.
    other = verify_plan(plan, honest, "f" * 64, ctx)
    assert not other.passed and "committed executor" in other.detail
    shutil.rmtree(folder, ignore_errors=True)


def test_compare_tolerates_rounding_not_edits():
    ref = torch.randn(64, 64)
    stored = ref.to(torch.bfloat16)
    assert compare(ref, stored, 1e-6)[1]  # one rounding step of bf16 is allowed
    assert not compare(ref, (ref + 1e-2).to(torch.bfloat16), 1e-4)[1]
    assert compare(ref, torch.zeros(3), 1.0) == (UNBOUNDED, False)
    nan = ref.clone()
    nan[0, 0] = float("nan")
    diff, ok = compare(ref, nan, 1.0)
    assert not ok and diff == UNBOUNDED


def test_runner_keeps_working_after_a_failed_job():
    import threading

    runner = JobRunner()
    done = threading.Event()
    runner.submit(lambda: 1 / 0)
    runner.submit(done.set)
    assert done.wait(5)
