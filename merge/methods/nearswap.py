"""NearSwap: take the other model's value where it is close to the base's, keep the base's where
they differ a lot — per entry, weight = clamp(t / |base − other|, 0, 1) of the other model.

Reference: https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001 (mergekit 0.1.5
`nearswap`): one model besides the base, `t` required; |base − other| is floored at 1e-6.
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (ParamSpec("t", float, doc="distance below which the other model's value is taken whole"),)
REFERENCE = "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"
DIFF_MIN = 1e-6


def nearswap(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
             global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    (other,) = tensors
    weight = (base - other).abs_().clamp_(min=DIFF_MIN).reciprocal_().mul_(float(global_params["t"])).clamp_(0, 1)
    return other.sub_(base).mul_(weight).add_(base)  # w·other + (1 − w)·base
