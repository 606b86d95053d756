"""A plan's executor and verifier on every architecture shape (tied embeddings, fused qkv,
Conv1D, sliding windows, pad-less tokenizers): the executor merges and signs, the verifier
checks the whole folder and recomputes every tensor, and a shifted tensor fails."""

from __future__ import annotations

import pytest

from node.jobs.context import JobContext
from node.jobs.node_jobs import execute_plan, verify_plan
from node.plans.model import Plan, PlanInput, Result, VerificationPolicy
from registry.local import LocalRegistry
from tests.archs.fixtures import ARCHS
from tests.node.forge import shift_tensors, submit_as_executor


@pytest.mark.parametrize("arch", ARCHS)
def test_a_plan_merges_and_verifies_on_every_architecture(arch, shaped_copy, tmp_path):
    home = tmp_path / "home"
    reg = LocalRegistry(home)
    try:
        base = reg.submit(shaped_copy(arch, 0), license="MIT").id
        e1 = reg.submit(shaped_copy(arch, 1), base=base, license="MIT").id
        e2 = reg.submit(shaped_copy(arch, 2), base=base, license="MIT").id
        key = reg.identity().key_id
    finally:
        reg.close()
    recipe = {"merge_method": "dare_ties", "base_model": base, "dtype": "float32", "parameters": {"random_seed": 7},
              "models": [{"model": e1, "parameters": {"weight": 0.6, "density": 0.7}},
                         {"model": e2, "parameters": {"weight": 0.4, "density": 0.7}}]}
    plan = Plan.new(proposer=key, proposer_address="127.0.0.1:1", recipe=recipe, license="MIT",
                    inputs=[PlanInput(base, "base"), PlanInput(e1, "expert"), PlanInput(e2, "expert")],
                    verification=VerificationPolicy(verifiers=1, spot_check=1.0))
    ctx = JobContext(home, key, lambda: "127.0.0.1:1", device="cpu")
    result = execute_plan(plan, ctx)
    att = verify_plan(plan, result, key, ctx)
    assert att.passed, att.detail
    assert "tensors recomputed and matched" in att.detail and att.max_abs_diff == 0.0

    reg = LocalRegistry(home)
    try:  # the same folder with one tensor nudged, signed with every honest claim: caught
        folder = reg.materialize(result.model_id, tmp_path / "doctored")
        weights = sorted(folder.glob("*.safetensors"))[0]
        shift_tensors(weights, 1e-2)
        doctored = submit_as_executor(reg, folder, plan, key)
    finally:
        reg.close()
    bad = verify_plan(plan, Result(plan.plan_id, doctored, "127.0.0.1:1", "cpu", 0.1), key, ctx)
    assert not bad.passed and "tensors differ" in bad.detail
