"""Linear merge ("model soup"): Σ wᵢ·xᵢ, divided by Σ wᵢ when `normalize` (the default).

Reference: Wortsman et al., https://arxiv.org/abs/2203.05482
"""

from __future__ import annotations

from typing import Any

from merge.errors import RecipeError
from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (
    ParamSpec("weight", float, per_model=True, doc="this model's share"),
    ParamSpec("normalize", bool, True, doc="divide by the sum of weights"),
)
REFERENCE = "https://arxiv.org/abs/2203.05482"


def linear(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
           global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    weights = [float(p["weight"]) for p in params]
    out = tensors[0].mul_(weights[0])
    for t, w in zip(tensors[1:], weights[1:], strict=True):
        out.add_(t, alpha=w)
    if global_params["normalize"]:
        total = float(torch.tensor(weights, dtype=torch.float32).sum())
        if total == 0:
            raise RecipeError("linear merge weights sum to zero; change the weights or set normalize: false")
        out.div_(total)
    return out
