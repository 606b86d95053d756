"""SCE: Select (keep the entries where the task vectors vary most across models), Calculate
(weight each model by the mean square of its selected task vector), Erase (drop entries whose
sign disagrees with the elected one), then average the agreeing entries with those weights.

Reference: Wan et al. (FuseChat), https://arxiv.org/abs/2408.07990. Parameters and edge cases
as mergekit 0.1.5: `select_topk` (default 1: keep all) is the share of entries with nonzero
variance that are kept, k = int(nonzero · select_topk); when the weights' sum is below 1e-6
every model weighs the same; the divisor is clamped at 1e-6. Entries tied at the selection
threshold are kept lowest index first. `int8_mask` is accepted and has no effect.
"""

from __future__ import annotations

from typing import Any

import torch

from merge.methods.base import ParamSpec
from merge.methods.gta import task_vectors
from merge.methods.sparsify import topk_mask

PARAMS = (
    ParamSpec("select_topk", float, 1.0, doc="share of highest-variance entries kept"),
    ParamSpec("int8_mask", bool, False, doc="accepted for mergekit compatibility; no effect"),
)
REFERENCE = "https://arxiv.org/abs/2408.07990"
WEIGHT_SUM_EPS = 1e-6
DIVISOR_MIN = 1e-6


def sce(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
        global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = task_vectors(tensors, base)
    share = global_params["select_topk"]
    if share < 1:
        keep = _high_variance(deltas, share)
        for d in deltas:
            d.mul_(keep)
        del keep
    weights = torch.stack([d.square().mean() for d in deltas])
    total = float(weights.sum())
    weights = torch.full_like(weights, 1 / len(deltas)) if abs(total) < WEIGHT_SUM_EPS else weights / total
    mixed = deltas[0].clone()
    for d in deltas[1:]:
        mixed.add_(d)
    positive = mixed >= 0  # a zero sum elects +
    mixed.zero_()
    # The first task vector's buffer becomes the divisor once it has been added in: one
    # tensor-sized buffer less at the peak (the embedding of a 270M model is 131 MB in float32).
    (first, w0), *rest = zip(deltas, weights.tolist(), strict=True)
    agree = torch.where(positive, first > 0, first < 0)
    mixed.add_(first.mul_(agree), alpha=w0)
    divisor = first.copy_(agree).mul_(w0)
    for d, w in rest:
        agree = torch.where(positive, d > 0, d < 0)
        mixed.add_(d.mul_(agree), alpha=w)
        divisor.add_(agree, alpha=w)
    del agree
    return mixed.div_(divisor.clamp_(min=DIVISOR_MIN)).add_(base)


def _high_variance(deltas: list[torch.Tensor], share: float) -> torch.Tensor:
    """0/1 mask of the int(nonzero · share) entries with the largest variance across models."""
    if share <= 0:
        return torch.zeros_like(deltas[0])
    n = len(deltas)
    mean = sum(deltas[1:], deltas[0].clone()).div_(n)
    var = torch.zeros_like(mean)
    for d in deltas:  # two passes, as torch.var: no cancellation between E[x²] and E[x]²
        var.add_((d - mean).square_())
    del mean
    var.div_(n)
    k = int(torch.count_nonzero(var) * share)  # in float32, as mergekit computes it
    return topk_mask(var, k).to(var.dtype)
