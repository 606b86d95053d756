"""Karcher mean: the weighted Riemannian mean of the inputs' directions on the unit hypersphere
(fixed-point iteration), scaled by the inputs' mean norm.

Reference: https://arxiv.org/abs/2603.04972 (as registered by mergekit 0.1.5). Every input
weighs 1/n; inputs with norm ≤ `tol` take no part in the direction but count in the norm;
the iteration stops after `max_iter` steps (default 10) or when the tangent step is shorter
than `tol` (default 1e-5). The base model, when the recipe names one, is one more input, as in
mergekit. The algorithm and its branches follow mergekit's step by step, in float32.
"""

from __future__ import annotations

import math
from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (
    ParamSpec("max_iter", int, 10, doc="most fixed-point iterations"),
    ParamSpec("tol", float, 1e-5, doc="convergence tolerance (and the smallest norm that counts)"),
)
REFERENCE = "https://arxiv.org/abs/2603.04972"


def karcher(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
            global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    max_iter, tol = global_params["max_iter"], global_params["tol"]
    alpha = 1.0 / len(tensors)
    norms = [float(torch.linalg.vector_norm(t)) for t in tensors]
    units = [t.div_(n).reshape(-1) for t, n in zip(tensors, norms, strict=True) if n > tol]  # in place
    if not units:
        return tensors[0].zero_()
    shape = tensors[0].shape
    weight = 1.0 / len(units)  # the valid inputs' alphas, normalized
    mean = torch.zeros_like(units[0])
    for u in units:
        mean.add_(u, alpha=weight)
    mean_norm = float(torch.linalg.vector_norm(mean))
    mean = units[0].clone() if mean_norm < tol else mean.div_(mean_norm)
    tangent = torch.empty_like(mean)
    for _ in range(max_iter):
        tangent.zero_()
        for u in units:
            dot = max(-1.0, min(1.0, float(torch.dot(mean, u))))
            theta = math.acos(dot)
            if theta < tol:
                continue
            # the log map of u at mean: (u − cosθ·mean)·θ/sinθ
            tangent.add_(u - dot * mean, alpha=weight * theta / math.sin(theta))
        step = float(torch.linalg.vector_norm(tangent))
        if step < tol:
            break
        mean.mul_(math.cos(step)).add_(tangent, alpha=math.sin(step) / step)  # the exp map
        length = float(torch.linalg.vector_norm(mean))
        if length > tol:
            mean.div_(length)
    return mean.mul_(alpha * sum(norms)).reshape(shape)
