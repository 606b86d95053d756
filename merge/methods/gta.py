"""Generalized task arithmetic: the shared core of task_arithmetic, TIES, DARE and breadcrumbs.

    out = combine(base, deltas, weights, consensus=True, normalize=True, lam=1.0)

Each method sparsifies its task vectors (x − base) its own way, then calls `combine`:
deltas are multiplied by their weights; with `consensus` (TIES sign election) the sign of the
weighted sum is elected per entry (a zero sum elects +) and only deltas agreeing with it are
summed, divided (with `normalize`) by the sum of the agreeing weights (a zero divisor counts
as 1); without consensus the weighted deltas are summed and divided by the sum of all weights
(|sum| < 1e-8 counts as 1). The result is `base + lam · mixed`. This is mergekit 0.1.5's
GeneralizedTaskArithmeticMerge, computed block-wise in place: memory stays at (inputs + 1) tensors.
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec
from merge.methods.sparsify import BLOCK, Trim, TrimCursor

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
            normalize: bool, lam: float, trims: list[Trim | None] | None = None) -> torch.Tensor:
    """Weighted (optionally sign-elected) sum of task vectors added to `base`. Overwrites `deltas`.

    `trims` (one per delta, from `plan_trim`) are applied on the way. The work runs in blocks of
    BLOCK elements so that the dozen elementwise steps per entry stay in the CPU cache; the
    arithmetic, and so every output bit, is the same as on whole tensors.
    """
    cursors = [TrimCursor(t) if t is not None else None for t in (trims or [None] * len(deltas))]
    flat_base = base.reshape(-1)
    flats = [d.reshape(-1) for d in deltas]
    # Each block of the first delta is dead once `mixed` holds its share: the output goes there,
    # saving a whole tensor of peak memory.
    out = flats[0]
    total = float(torch.tensor(weights, dtype=torch.float32).sum())
    divisor = 1.0 if abs(total) < 1e-8 else total
    # Blocks help the CPU cache; on a GPU they would only multiply kernel launches.
    block = BLOCK if base.device.type == "cpu" else max(1, flat_base.numel())
    for start in range(0, flat_base.numel(), block):
        end = start + block
        ds = [f[start:end] for f in flats]
        for d, w, cursor in zip(ds, weights, cursors, strict=True):
            if cursor is not None:
                cursor.apply(d)
            d.mul_(w)
        mixed = ds[0].clone()
        for d in ds[1:]:
            mixed.add_(d)
        if consensus:
            mixed = _elect(mixed, ds, weights, normalize)
        elif normalize:
            mixed.div_(divisor)
        if lam != 1:
            mixed.mul_(lam)
        torch.add(flat_base[start:end], mixed, out=out[start:end])
    return out.reshape(base.shape)


def _elect(total: torch.Tensor, ds: list[torch.Tensor], weights: list[float], normalize: bool) -> torch.Tensor:
    """TIES sign election on one block: keep the entries agreeing with the sign of `total`."""
    positive = total >= 0  # a zero sum elects +
    mixed = total.zero_()
    div = torch.zeros_like(mixed)
    for d, w in zip(ds, weights, strict=True):
        agree = torch.where(positive, d > 0, d < 0)
        mixed.add_(d * agree)
        div.add_(agree, alpha=w)
    if normalize:
        div.masked_fill_(div == 0, 1.0)
        mixed.div_(div)
    return mixed


def weights_of(params: list[dict[str, Any]]) -> list[float]:
    return [float(p["weight"]) for p in params]
