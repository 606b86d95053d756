"""Make a model and register it: the merge or fusion, then the signed `merged` manifest with one
`Provenance`. The CLI (`merge --submit`, `fuse --submit`) and the plan executor both come here.

    made = merge_and_submit(recipe, out, resolver, registry=reg, submit=Submission())
    made = fuse_and_submit(recipe, out, resolver, registry=reg, submit=None)   # just fuse
    made.record.id, made.provenance

A `Submission` says how the output is registered; a plan's executor adds its plan id and key,
and the manifest fields (base, license, policy) the plan implies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.ops.inputs import InputResolver, identify_inputs
from registry.ids import PlanId
from registry.provenance import FUSION, InputRef, Provenance
from registry.version import MERGENET_VERSION

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Submission:
    """How a produced model is registered. `plan_id`/`executor`: set by a plan's executor."""

    base: str | None = None
    license: str | None = None
    policy: str = "open"
    name: str | None = None
    tags: tuple[str, ...] = ()
    plan_id: PlanId | None = None
    executor: str | None = None
    consent_keys: tuple[str, ...] = ()  # with policy `consent`: whose consent a derivative needs


@dataclass(frozen=True)
class Produced:
    result: Any  # merge.executor.MergeResult or merge.fusion.FusionResult
    provenance: Provenance
    record: Any | None  # registry.records.ModelRecord when submitted

    @property
    def device(self) -> str:
        return str(self.result.device)


def _register(registry: Any, out: Path, provenance: Provenance, submission: Submission) -> Any:
    return registry.submit(out, kind="merged", base=submission.base, license=submission.license,
                           policy=submission.policy, name=submission.name, tags=submission.tags,
                           provenance=provenance)


def merge_roles(recipe: Any) -> list[tuple[str, str]]:
    """(role, ref) of every model a merge recipe names."""
    return [("base" if ref == recipe.base_model else "tokenizer" if ref == recipe.tokenizer_source else "expert", ref)
            for ref in recipe.model_refs()]


def merge_and_submit(recipe: Any, out: Path, resolver: InputResolver, *, registry: Any | None,
                     submit: Submission | None, device: str = "auto", out_dtype: str | None = None,
                     shard_size: int | None = None, progress: Progress | None = None,
                     copy_tokenizer: bool = True) -> Produced:
    """Merge `recipe` (references as written) into `out`; register it when `submit` is given."""
    from merge.executor import DEFAULT_SHARD_SIZE, run_merge

    runnable = recipe.with_models(resolver.folders(recipe.model_refs()))
    named = identify_inputs(merge_roles(recipe), resolver, registry)
    inputs: list[InputRef] = []

    def card_inputs() -> Mapping[str, str]:
        inputs[:] = named()
        return {i.ref: i.id or i.digests or "" for i in inputs}

    result = run_merge(runnable, out, device=device, out_dtype=out_dtype, progress=progress,
                       shard_size=shard_size or DEFAULT_SHARD_SIZE, inputs=card_inputs, card_recipe=recipe,
                       version=MERGENET_VERSION, license=submit.license if submit else None,
                       copy_tokenizer=copy_tokenizer)
    if not inputs:
        inputs[:] = named()
    extra = submit or Submission()
    provenance = Provenance(method=recipe.merge_method, recipe=recipe.to_dict(), inputs=tuple(inputs),
                            device=result.device, plan_id=extra.plan_id, executor=extra.executor,
                            consent_keys=extra.consent_keys)
    record = _register(registry, result.out_dir, provenance, submit) if submit is not None else None
    return Produced(result, provenance, record)


def fuse_and_submit(recipe: Any, out: Path, resolver: InputResolver, *, registry: Any | None,
                    submit: Submission | None, device: str = "auto", work_dir: Path | None = None,
                    progress: Progress | None = None, recorded_recipe: Mapping[str, Any] | None = None,
                    recorded_data_sha256: str | None = None) -> Produced:
    """Fuse `recipe` into `out`; register it when `submit` is given. The provenance records
    `recorded_recipe` and `recorded_data_sha256` when given (a plan: its recipe without the inline
    data bytes, and the digest of all its data), else the recipe and the digest of its data file."""
    from merge.fusion import run_fusion

    roles = [("target", recipe.target), *(("source", s) for s in recipe.sources if s != recipe.target)]
    named = identify_inputs(roles, resolver, registry)
    result = run_fusion(recipe, out, device=device, work_dir=work_dir, progress=progress, resolve=resolver.folder,
                        version=MERGENET_VERSION, license=submit.license if submit else None)
    extra = submit or Submission()
    provenance = Provenance(method=FUSION, recipe=dict(recorded_recipe or recipe.to_dict()), inputs=named(),
                            device=result.device, plan_id=extra.plan_id, executor=extra.executor,
                            data_sha256=recorded_data_sha256 or result.data_sha256, train_examples=result.examples,
                            consent_keys=extra.consent_keys)
    record = _register(registry, result.out_dir, provenance, submit) if submit is not None else None
    return Produced(result, provenance, record)
