"""Multi-SLERP: barycentric interpolation of any number of models on a hypersphere — project
the unit directions onto the tangent space at their weighted mean, average there, map back with
the exponential map, and scale by the weighted mean norm. A base model (optional) makes it
interpolate task vectors.

Reference: https://goddard.blog/posts/multislerp-wow-what-a-cool-idea (mergekit 0.1.5
`multislerp`): per-model `weight` (normalized to sum 1 unless `normalize_weights: false`),
`eps` (default 1e-8). When the weighted mean direction vanishes, two models fall back to
linear interpolation and more are refused, as in mergekit. (In exact arithmetic the tangent
average at the weighted mean vanishes, leaving the normalized weighted mean direction times the
weighted mean norm; the steps are mergekit's so that the rounding is too.)
"""

from __future__ import annotations

import math
from typing import Any

from merge.errors import RecipeError
from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (
    ParamSpec("weight", float, per_model=True, doc="this model's share"),
    ParamSpec("normalize_weights", bool, True, doc="divide the weights by their sum"),
    ParamSpec("eps", float, 1e-8, doc="numerical floor of norms"),
)
REFERENCE = "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"


def multislerp(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
               global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    eps = global_params["eps"]
    weights = torch.tensor([float(p["weight"]) for p in params], dtype=torch.float32)
    if global_params["normalize_weights"]:
        total = float(weights.sum())
        if total == 0:
            raise RecipeError("multislerp weights sum to zero; change the weights or set normalize_weights: false")
        weights = weights / total
    ws = weights.tolist()
    shape = tensors[0].shape
    vs = [(t.sub_(base) if base is not None else t).reshape(-1) for t in tensors]
    norms = [float(torch.linalg.vector_norm(v)) for v in vs]
    mean = torch.zeros_like(vs[0])
    for v, n, w in zip(vs, norms, ws, strict=True):
        mean.add_(v / (n + eps), alpha=w)
    mean_norm = float(torch.linalg.vector_norm(mean))
    if mean_norm < eps:
        if len(vs) != 2:
            raise RecipeError("multislerp: the weighted mean of the inputs' directions is zero (antipodal inputs "
                              "whose weights balance out); change the weights")
        out = vs[0].mul_(ws[0]).add_(vs[1], alpha=ws[1]).reshape(shape)
        return out.add_(base) if base is not None else out
    mean.div_(mean_norm)
    tangent = torch.zeros_like(mean)
    for v, n, w in zip(vs, norms, ws, strict=True):
        u = v.div_(n + eps)  # in place: the inputs are ours and not needed after this
        tangent.add_(u - float(torch.dot(u, mean)) * mean, alpha=w)  # u projected onto the tangent space
    step = float(torch.linalg.vector_norm(tangent)) + eps
    out = mean.mul_(math.cos(step)).add_(tangent, alpha=math.sin(step) / step)  # the exponential map
    out = out.mul_(sum(n * w for n, w in zip(norms, ws, strict=True))).reshape(shape)
    return out.add_(base) if base is not None else out
