"""Merge methods: an explicit registry from the names recipes use to small functions.

    from merge.methods import METHODS
    out = METHODS["ties"].fn(experts, base, per_model_params, global_params, generator)

Modules: `base.py` (ParamSpec, MergeMethod), `sparsify.py` (trimming, DARE and DELLA dropping),
`gta.py` (task-vector combination with optional sign election), one module per method family:
`linear.py`, `task_arithmetic.py`, `ties.py`, `dare.py`, `della.py`, `breadcrumbs.py`, `sce.py`,
`slerp.py`, `nuslerp.py`, `multislerp.py`, `karcher.py`, `model_stock.py`, `nearswap.py`,
`arcee_fusion.py`, `ram.py`, `passthrough.py`. Nothing registers itself on import: the table
below is the whole registry. Names, parameters and defaults are mergekit 0.1.5's.
"""

from __future__ import annotations

from merge.methods import (
    arcee_fusion,
    breadcrumbs,
    dare,
    della,
    karcher,
    linear,
    model_stock,
    multislerp,
    nearswap,
    nuslerp,
    passthrough,
    ram,
    sce,
    slerp,
    task_arithmetic,
    ties,
)
from merge.methods.base import REQUIRED, MergeMethod, ParamSpec

# Parameters every recipe may set besides the method's own.
RECIPE_PARAMS = {
    "random_seed": "seed of randomized methods (DARE, DELLA); default 0",
    # mergekit stores sign masks as int8 to save memory when set; results are the same
    "int8_mask": "accepted for mergekit compatibility; no effect on results",
}

METHODS: dict[str, MergeMethod] = {
    m.name: m for m in (
        MergeMethod("linear", linear.linear, linear.PARAMS, needs_base=False, randomized=False,
                    reference=linear.REFERENCE, elementwise=True),
        MergeMethod("task_arithmetic", task_arithmetic.task_arithmetic, task_arithmetic.PARAMS, needs_base=True,
                    randomized=False, reference=task_arithmetic.REFERENCE, elementwise=True),
        MergeMethod("ties", ties.ties, ties.PARAMS, needs_base=True, randomized=False, reference=ties.REFERENCE),
        MergeMethod("dare_ties", dare.dare_ties, dare.PARAMS, needs_base=True, randomized=True,
                    reference=dare.REFERENCE),
        MergeMethod("dare_linear", dare.dare_linear, dare.PARAMS, needs_base=True, randomized=True,
                    reference=dare.REFERENCE),
        MergeMethod("della", della.della, della.PARAMS, needs_base=True, randomized=True,
                    reference=della.REFERENCE),
        MergeMethod("della_linear", della.della_linear, della.LINEAR_PARAMS, needs_base=True, randomized=True,
                    reference=della.REFERENCE),
        MergeMethod("breadcrumbs", breadcrumbs.breadcrumbs, breadcrumbs.PARAMS, needs_base=True, randomized=False,
                    reference=breadcrumbs.REFERENCE),
        MergeMethod("breadcrumbs_ties", breadcrumbs.breadcrumbs_ties, breadcrumbs.PARAMS, needs_base=True,
                    randomized=False, reference=breadcrumbs.REFERENCE),
        MergeMethod("sce", sce.sce, sce.PARAMS, needs_base=True, randomized=False, reference=sce.REFERENCE),
        MergeMethod("slerp", slerp.slerp, slerp.PARAMS, needs_base=True, randomized=False,
                    reference=slerp.REFERENCE, min_inputs=1, max_inputs=1),
        MergeMethod("nuslerp", nuslerp.nuslerp, nuslerp.PARAMS, needs_base=False, randomized=False,
                    reference=nuslerp.REFERENCE, min_inputs=2, max_inputs=2, base_optional=True),
        MergeMethod("multislerp", multislerp.multislerp, multislerp.PARAMS, needs_base=False, randomized=False,
                    reference=multislerp.REFERENCE, base_optional=True),
        MergeMethod("karcher", karcher.karcher, karcher.PARAMS, needs_base=False, randomized=False,
                    reference=karcher.REFERENCE, base_as_input=True),
        MergeMethod("passthrough", passthrough.passthrough, passthrough.PARAMS, needs_base=False, randomized=False,
                    reference=passthrough.REFERENCE, min_inputs=1, max_inputs=1),
        MergeMethod("model_stock", model_stock.model_stock, model_stock.PARAMS, needs_base=True, randomized=False,
                    reference=model_stock.REFERENCE, min_inputs=2),
        MergeMethod("nearswap", nearswap.nearswap, nearswap.PARAMS, needs_base=True, randomized=False,
                    reference=nearswap.REFERENCE, min_inputs=1, max_inputs=1),
        MergeMethod("arcee_fusion", arcee_fusion.arcee_fusion, arcee_fusion.PARAMS, needs_base=True,
                    randomized=False, reference=arcee_fusion.REFERENCE, min_inputs=1, max_inputs=1),
        MergeMethod("ram", ram.ram, ram.PARAMS, needs_base=True, randomized=False, reference=ram.REFERENCE),
        MergeMethod("ramplus_tl", ram.ramplus_tl, ram.PLUS_PARAMS, needs_base=True, randomized=False,
                    reference=ram.REFERENCE),
    )
}

__all__ = ["METHODS", "RECIPE_PARAMS", "REQUIRED", "MergeMethod", "ParamSpec"]
