"""What an executor — honest or not — signs into a merged manifest for a plan: the `Provenance`
tests attach to folders they build by hand (tampered weights, noise) to play a lying executor."""

from __future__ import annotations

from node.plans import fusion, rules
from node.plans.model import Plan
from registry.ids import ModelId, PlanId
from registry.provenance import FUSION, InputRef, Provenance


def plan_provenance(plan: Plan, device: str, executor: str, train_examples: int | None = None) -> Provenance:
    """The provenance the plan's honest executor would sign."""
    inputs = tuple(InputRef("source" if plan.is_fusion and i.role == "expert" else i.role, i.model_id,
                            ModelId.parse(i.model_id)) for i in plan.inputs)
    if plan.is_fusion:
        return Provenance(method=FUSION, recipe=fusion.provenance_recipe(plan.recipe), inputs=inputs, device=device,
                          plan_id=PlanId.parse(plan.plan_id), executor=executor,
                          data_sha256=plan.recipe["data_sha256"], train_examples=train_examples,
                          consent_keys=rules.output_consent_keys(plan))
    return Provenance(method=plan.recipe["merge_method"], recipe=dict(plan.recipe), inputs=inputs, device=device,
                      plan_id=PlanId.parse(plan.plan_id), executor=executor,
                      consent_keys=rules.output_consent_keys(plan))
