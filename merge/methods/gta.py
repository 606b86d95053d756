"""Generalized task arithmetic: the shared core of task_arithmetic, TIES, DARE and breadcrumbs.

    out = combine(base, deltas, weights, consensus=True, normalize=True, lam=1.0)

Each method sparsifies its task vectors (x − base) its own way, then calls `combine`:
deltas are multiplied by their weights; with `consensus` (TIES sign election) the sign of the
weighted sum is elected per entry (a zero sum elects +) and only deltas agreeing with it are
summed, divided (with `normalize`) by the sum of the agreeing weights (a zero divisor counts
as 1); without consensus the weighted deltas are summed and divided by the sum of all weights
(|sum| < 1e-8 counts as 1). The result is `base + lam · mixed`. This is mergekit 0.1.5's
GeneralizedTaskArithmeticMerge, computed in place to keep memory at (inputs + 2) tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from merge.methods.base import ParamSpec

COMMON_PARAMS = (
    ParamSpec("weight", float, per_model=True, doc="scale of this model's task vector"),
    ParamSpec("density", float, 1.0, per_model=True, doc="share of task-vector entries kept"),
    ParamSpec("int8_mask", bool, False, doc="accepted for mergekit compatibility; no effect"),
    ParamSpec("lambda", float, 1.0, doc="scale of the combined task vector"),
)


def gta_params(normalize: bool, rescale: bool, extra: tuple[ParamSpec, ...] = ()) -> tuple[ParamSpec, ...]:
    """The parameter list of a task-vector method with its own normalize/rescale defaults."""
    return (*COMMON_PARAMS, ParamSpec("normalize", bool, normalize, doc="divide by the sum of weights"),
            ParamSpec("rescale", bool, rescale, doc="rescale sparsified task vectors"), *extra)


def task_vectors(tensors: list[torch.Tensor], base: torch.Tensor) -> list[torch.Tensor]:
    """x − base for every input, overwriting the inputs (which the caller handed over)."""
    return [t.sub_(base) for t in tensors]


def combine(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], *, consensus: bool,
            normalize: bool, lam: float) -> torch.Tensor:
    """Weighted (optionally sign-elected) sum of task vectors added to `base`. Overwrites `deltas`."""
    for d, w in zip(deltas, weights, strict=True):
        d.mul_(w)
    mixed = torch.zeros_like(base)
    for d in deltas:
        mixed.add_(d)
    if consensus:
        positive = mixed >= 0  # elected sign: + where the weighted sum is ≥ 0
        mixed.zero_()
        divisor = torch.zeros_like(base)
        for d, w in zip(deltas, weights, strict=True):
            agree = torch.where(positive, d > 0, d < 0)
            d.mul_(agree)
            mixed.add_(d)
            divisor.add_(agree, alpha=w)
            del agree
        del positive
        divisor.masked_fill_(divisor == 0, 1.0)
        if normalize:
            mixed.div_(divisor)
        del divisor
    elif normalize:
        total = sum(weights)
        mixed.div_(1.0 if abs(total) < 1e-8 else total)
    if lam != 1:
        mixed.mul_(lam)
    return mixed.add_(base)


def weights_of(params: list[dict[str, Any]]) -> list[float]:
    return [float(p["weight"]) for p in params]
