"""Merge methods: an explicit registry from the names recipes use to small functions.

    from merge.methods import METHODS
    out = METHODS["ties"].fn(experts, base, per_model_params, global_params, generator)

Modules: `base.py` (ParamSpec, MergeMethod), `sparsify.py` (trimming, DARE dropping),
`gta.py` (task-vector combination with optional sign election), one module per method family:
`linear.py`, `task_arithmetic.py`, `ties.py`, `dare.py`, `breadcrumbs.py`, `slerp.py`,
`model_stock.py`, `passthrough.py`. Nothing registers itself on import: the table below is the whole registry.
"""

from __future__ import annotations

from merge.methods import breadcrumbs, dare, linear, model_stock, passthrough, slerp, task_arithmetic, ties
from merge.methods.base import REQUIRED, MergeMethod, ParamSpec

# Parameters every recipe may set besides the method's own.
RECIPE_PARAMS = {"random_seed": "seed of randomized methods (DARE); default 0"}

METHODS: dict[str, MergeMethod] = {
    m.name: m for m in (
        MergeMethod("linear", linear.linear, linear.PARAMS, needs_base=False, randomized=False,
                    reference=linear.REFERENCE),
        MergeMethod("task_arithmetic", task_arithmetic.task_arithmetic, task_arithmetic.PARAMS, needs_base=True,
                    randomized=False, reference=task_arithmetic.REFERENCE),
        MergeMethod("ties", ties.ties, ties.PARAMS, needs_base=True, randomized=False, reference=ties.REFERENCE),
        MergeMethod("dare_ties", dare.dare_ties, dare.PARAMS, needs_base=True, randomized=True,
                    reference=dare.REFERENCE),
        MergeMethod("dare_linear", dare.dare_linear, dare.PARAMS, needs_base=True, randomized=True,
                    reference=dare.REFERENCE),
        MergeMethod("breadcrumbs", breadcrumbs.breadcrumbs, breadcrumbs.PARAMS, needs_base=True, randomized=False,
                    reference=breadcrumbs.REFERENCE),
        MergeMethod("breadcrumbs_ties", breadcrumbs.breadcrumbs_ties, breadcrumbs.PARAMS, needs_base=True,
                    randomized=False, reference=breadcrumbs.REFERENCE),
        MergeMethod("slerp", slerp.slerp, slerp.PARAMS, needs_base=True, randomized=False,
                    reference=slerp.REFERENCE, min_inputs=1, max_inputs=1),
        MergeMethod("passthrough", passthrough.passthrough, passthrough.PARAMS, needs_base=False, randomized=False,
                    reference=passthrough.REFERENCE, min_inputs=1, max_inputs=1),
        MergeMethod("model_stock", model_stock.model_stock, model_stock.PARAMS, needs_base=True, randomized=False,
                    reference=model_stock.REFERENCE, min_inputs=2),
    )
}

__all__ = ["METHODS", "RECIPE_PARAMS", "REQUIRED", "MergeMethod", "ParamSpec"]
