"""RAM (Reinforced Agent Merging): entries changed by one model only keep that model's change
whole; entries changed by several get the mean of those changes (others do not dilute them);
changes of at most `epsilon` in magnitude count as none and are dropped. `ramplus_tl` (RAM+,
tensor-local) also scales each model's unique changes by 1 + r·min(α, shared/unique), its
count of shared over unique changed entries in this tensor.

Reference: https://arxiv.org/abs/2601.13572 (mergekit 0.1.5 `ram`, `ramplus_tl`): `epsilon`
default 1e-5, `r` 0.1, `alpha` 0.2.
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec
from merge.methods.gta import task_vectors

EPSILON = ParamSpec("epsilon", float, 1e-5, doc="largest |change| that counts as no change")
PARAMS = (EPSILON,)
PLUS_PARAMS = (
    ParamSpec("r", float, 0.1, doc="strength of the boost of unique changes"),
    ParamSpec("alpha", float, 0.2, doc="cap of the shared/unique ratio in the boost"),
    EPSILON,
)
REFERENCE = "https://arxiv.org/abs/2601.13572"


def ram(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
        global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    return _merge(tensors, base, global_params["epsilon"], None)


def ramplus_tl(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
               global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    return _merge(tensors, base, global_params["epsilon"], (global_params["r"], global_params["alpha"]))


def _merge(tensors: list[torch.Tensor], base: torch.Tensor, epsilon: float,
           boost: tuple[float, float] | None) -> torch.Tensor:
    deltas = task_vectors(tensors, base)
    counts = torch.zeros(base.shape, dtype=torch.int32, device=base.device)
    for d in deltas:
        counts.add_(d.abs() > epsilon)
    unique = counts == 1
    scales = [1.0] * len(deltas)
    if boost is not None:
        r, alpha = boost
        shared = counts > 1
        for i, d in enumerate(deltas):
            changed = d.abs() > epsilon
            n_shared, n_unique = int((changed & shared).sum()), int((changed & unique).sum())
            scales[i] = 1 + r * min(max(n_shared / max(n_unique, epsilon), 0.0), alpha)
        del shared
    # a changed entry is divided by how many models changed it; a unique one is scaled instead
    divisor = counts.clamp_(min=1).to(base.dtype)
    out = torch.zeros_like(base)
    for d, scale in zip(deltas, scales, strict=True):
        d.mul_(d.abs() > epsilon)
        out.add_(torch.where(unique, d * scale, d / divisor))
    return out.add_(base)
