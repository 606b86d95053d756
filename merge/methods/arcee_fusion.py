"""Arcee Fusion: keep the other model's changes only where they matter most — importance =
|other − base| · KL(softmax(other) ‖ softmax(base)) per row, and entries whose importance is at
least median + 1.5·IQR take the other model's value; the rest keep the base's.

Reference: https://arcee.ai (mergekit 0.1.5 `arcee_fusion`; no parameters, one model besides
the base). Quantiles are the sorted importances at index ⌊q·(n − 1)⌋. mergekit estimates them
from a random sample of 1M entries on larger tensors; mergenet computes them exactly (the
results equal mergekit's on tensors up to 1M entries and are deterministic above).
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.sparsify import kth_largest

PARAMS = ()
REFERENCE = "https://arcee.ai"
SOFTMAX_EPS = 1e-8


def arcee_fusion(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                 global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    (other,) = tensors
    p = torch.softmax(other, dim=-1).add_(SOFTMAX_EPS)
    q = torch.softmax(base, dim=-1).add_(SOFTMAX_EPS)
    kl = (p * (p / q).log_()).sum(dim=-1, keepdim=True)  # (..., 1): one divergence per row
    del p, q
    delta = other.sub_(base)
    importance = delta.abs().mul_(kl)
    flat = importance.reshape(-1)
    n = flat.numel()
    q1, median, q3 = (kth_largest(flat, n - (n - 1) * k // 4) for k in (1, 2, 3))  # sorted[⌊k(n−1)/4⌋]
    keep = importance.ge_(median + 1.5 * (q3 - q1))  # 0-d float32 tensors: rounded as mergekit rounds
    return delta.mul_(keep).add_(base)
