"""What an executor — honest or not — signs for a plan: the `Provenance` and manifest claims
tests attach to folders they build by hand (tampered weights, doctored files, noise) to play a
lying executor, and a fused folder written as the honest fusion executor writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from node.jobs.claims import plan_submission
from node.plans import fusion, rules
from node.plans.model import Plan
from registry.folder import MANIFEST_FILE, SIGNATURE_FILE
from registry.ids import ModelId, PlanId
from registry.provenance import FUSION, InputRef, Provenance
from registry.version import MERGENET_VERSION


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


def submit_as_executor(registry: Any, folder: Path, plan: Plan, executor: str, device: str = "cpu",
                       train_examples: int | None = None, **overrides: Any) -> str:
    """Sign `folder` as `plan`'s result with every claim its honest executor signs, but those in
    `overrides` (keyword arguments of `LocalRegistry.submit`); returns the model id."""
    sub = plan_submission(plan, executor)
    claims: dict[str, Any] = {"kind": "merged", "base": sub.base, "license": sub.license, "policy": sub.policy,
                              "name": sub.name, "tags": sub.tags,
                              "provenance": plan_provenance(plan, device, executor, train_examples)}
    for own in (MANIFEST_FILE, SIGNATURE_FILE):  # left by materialize; submit writes its own
        (Path(folder) / own).unlink(missing_ok=True)
    return registry.submit(folder, **{**claims, **overrides}).id


def fused_folder(plan: Plan, target: Path, out: Path, work: Path, device: str = "cpu") -> tuple[Path, int]:
    """`out` as the plan's honest fusion executor writes it, but with the target's untrained
    weights: (the folder, the number of training examples)."""
    from merge.fusion import load_recipe
    from merge.fusion.card import model_card
    from merge.fusion.data import file_sha256, load_examples
    from merge.fusion.pipeline import expected_model_files

    train, _ = fusion.split_lines(fusion.data_bytes(plan.recipe), fusion.holdout_share(plan.recipe),
                                  plan.recipe["data_sha256"])
    Path(work).mkdir(parents=True, exist_ok=True)
    (Path(work) / "train.jsonl").write_bytes(train)
    recipe = load_recipe({**fusion.settings(plan.recipe), "data": str(Path(work) / "train.jsonl")})
    n = len(load_examples(Path(work) / "train.jsonl"))
    expected_model_files(target, out)
    metrics = {"lm_loss": 2.5, "fused_kl": 1.25}
    result = {"before": metrics, "after": metrics, "aligned_fraction": [0.5] * len(recipe.sources),
              "mean_weights": [0.5] * (1 + len(recipe.sources)), "examples": n,
              "data_sha256": file_sha256(Path(work) / "train.jsonl"), "device": device, "steps": 3}
    (Path(out) / "README.md").write_text(model_card(recipe, result, MERGENET_VERSION, plan.license), encoding="utf-8")
    return Path(out), n


def shift_tensors(weights: Path, delta: float, names: list[str] | None = None) -> None:
    """Add `delta` to float32 tensors `names` (default: all) of a safetensors file in place,
    keeping its header byte for byte: tampered values in the layout the writer produces."""
    import numpy as np

    raw = bytearray(Path(weights).read_bytes())
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    for name, info in header.items():
        if name == "__metadata__" or (names is not None and name not in names) or info["dtype"] != "F32":
            continue
        start, end = (8 + size + o for o in info["data_offsets"])
        values = np.frombuffer(bytes(raw[start:end]), dtype="<f4") + np.float32(delta)
        raw[start:end] = values.astype("<f4").tobytes()
    Path(weights).write_bytes(bytes(raw))
