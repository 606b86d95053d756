"""What a plan's result says about itself in its signed manifest, beside the provenance: one
function says it for the executor, and every verifier holds the result to the same function.

    submission = plan_submission(plan, ctx.key_id)     # the executor registers its output with it
    why = manifest_mismatch(plan, manifest)            # a verifier: None, or the field that lies

The claims are the plan's (license, the policy `rules.output_policy` gives, the base or target
input), never the executor's: it cannot grant a different license, and a merged manifest
carries no eval scores, since nobody asked it to measure any and no verifier checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.ops.producing import Submission
from node.plans import rules
from node.plans.model import Plan
from registry.ids import PlanId

PLAN_TAG = "mergenet-plan"


def plan_submission(plan: Plan, executor: str) -> Submission:
    """How the executor with key id `executor` registers the output of `plan`."""
    role = "target" if plan.is_fusion else "base"
    base = next((i.model_id for i in plan.inputs if i.role == role), None)
    name = f"{'fused' if plan.is_fusion else 'merged'}-{plan.digest_hex[:12]}"
    tags = (PLAN_TAG, "fusion") if plan.is_fusion else (PLAN_TAG,)
    return Submission(base=base, license=plan.license, policy=rules.output_policy(plan), name=name, tags=tags,
                      plan_id=PlanId.parse(plan.plan_id), executor=executor,
                      consent_keys=rules.output_consent_keys(plan))


def manifest_mismatch(plan: Plan, manifest: Mapping[str, Any]) -> str | None:
    """The first manifest field of a plan's result that is not what `plan_submission` says."""
    want = plan_submission(plan, "")
    expected: dict[str, Any] = {"kind": "merged", "license": want.license, "policy": want.policy,
                                "base_model": want.base, "name": want.name, "tags": list(want.tags)}
    for field, value in expected.items():
        if manifest.get(field) != value:
            return f"the merged manifest's {field} is {manifest.get(field)!r}, the plan's output gets {value!r}"
    if manifest.get("eval_scores"):
        return (f"the merged manifest claims eval_scores ({', '.join(sorted(manifest['eval_scores']))}) "
                "that no verifier measured; a plan's result carries none")
    return None
