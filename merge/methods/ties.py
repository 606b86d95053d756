"""TIES-merging: trim each task vector to its top-`density` magnitudes, elect a sign per entry
by summed weighted mass, and average the agreeing entries (disjoint mean).

Reference: Yadav et al., https://arxiv.org/abs/2306.01708
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.gta import combine, gta_params, task_vectors, weights_of
from merge.methods.sparsify import magnitude, plan_trim

PARAMS = gta_params(normalize=True, rescale=False)
REFERENCE = "https://arxiv.org/abs/2306.01708"


def ties(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
         global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = task_vectors(tensors, base)
    if global_params["rescale"]:  # L1 rescaling needs the whole trimmed tensor: trim up front
        deltas = [magnitude(d, p["density"], rescale=True) for d, p in zip(deltas, params, strict=True)]
        trims = None
    else:  # decide each trim now, apply it block by block inside combine
        trims = [plan_trim(d, p["density"]) for d, p in zip(deltas, params, strict=True)]
    return combine(base, deltas, weights_of(params), consensus=True,
                   normalize=global_params["normalize"], lam=global_params["lambda"], trims=trims)
