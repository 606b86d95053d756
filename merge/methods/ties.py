"""TIES-merging: trim each task vector to its top-`density` magnitudes, elect a sign per entry
by summed weighted mass, and average the agreeing entries (disjoint mean).

Reference: Yadav et al., https://arxiv.org/abs/2306.01708
"""

from __future__ import annotations

from typing import Any

import torch

from merge.methods.gta import combine, gta_params, task_vectors, weights_of
from merge.methods.sparsify import magnitude

PARAMS = gta_params(normalize=True, rescale=False)
REFERENCE = "https://arxiv.org/abs/2306.01708"


def ties(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
         global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = [magnitude(d, p["density"], rescale=global_params["rescale"])
              for d, p in zip(task_vectors(tensors, base), params, strict=True)]
    return combine(base, deltas, weights_of(params), consensus=True,
                   normalize=global_params["normalize"], lam=global_params["lambda"])
