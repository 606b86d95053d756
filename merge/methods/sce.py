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

from merge.lazy import torch
from merge.methods.base import ParamSpec
from merge.methods.gta import task_vectors
from merge.methods.sparsify import BLOCK, topk_mask

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
            d.mul_(keep)  # by a bool mask: the same bits as by 1.0/0.0, a quarter of the bytes
        del keep
    weights = torch.stack([d.square().mean() for d in deltas])
    total = float(weights.sum())
    weights = torch.full_like(weights, 1 / len(deltas)) if abs(total) < WEIGHT_SUM_EPS else weights / total
    return _erase_and_mix(base, deltas, weights.tolist())


def _blocks(t: torch.Tensor) -> range:
    """Start offsets of BLOCK-sized slices on a CPU (cache-sized scratch, bits as on whole tensors);
    one slice on a GPU, where blocks would only multiply kernel launches."""
    n = t.numel()
    return range(0, n, BLOCK if t.device.type == "cpu" else max(1, n))


def _summed(ds: list[torch.Tensor]) -> torch.Tensor:
    """A new tensor holding ((d0 + d1) + d2) + …, in that order (the order fixes the bits)."""
    total = ds[0].clone()
    for d in ds[1:]:
        total.add_(d)
    return total


def _erase_and_mix(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Elect each entry's sign by the sum of the task vectors, keep the agreeing entries, average
    them with `weights`, add `base`. Block by block; each block of the first task vector is dead
    once read, so the output is written there (no tensor-sized buffer beyond the inputs)."""
    flat_base = base.reshape(-1)
    flats = [d.reshape(-1) for d in deltas]
    out = flats[0]
    step = _blocks(flat_base).step
    for start in _blocks(flat_base):
        ds = [f[start:start + step] for f in flats]
        mixed = _summed(ds)
        positive = mixed >= 0  # a zero sum elects +
        mixed.zero_()
        divisor = torch.zeros_like(mixed)
        for d, w in zip(ds, weights, strict=True):
            agree = torch.where(positive, d > 0, d < 0)
            mixed.add_(d.mul_(agree), alpha=w)
            divisor.add_(agree, alpha=w)
        torch.add(mixed.div_(divisor.clamp_(min=DIVISOR_MIN)), flat_base[start:start + step], out=ds[0])
    return out.reshape(base.shape)


def _high_variance(deltas: list[torch.Tensor], share: float) -> torch.Tensor:
    """Bool mask of the int(nonzero · share) entries with the largest variance across models."""
    if share <= 0:
        return torch.zeros_like(deltas[0], dtype=torch.bool)
    n = len(deltas)
    flats = [d.reshape(-1) for d in deltas]
    var = torch.empty_like(flats[0])
    step = _blocks(var).step
    for start in _blocks(var):
        ds = [f[start:start + step] for f in flats]
        mean = _summed(ds).div_(n)
        v = var[start:start + step].zero_()
        for d in ds:  # two passes, as torch.var: no cancellation between E[x²] and E[x]²
            v.add_((d - mean).square_())
        v.div_(n)
    k = int(torch.count_nonzero(var) * share)  # in float32, as mergekit computes it
    return topk_mask(var, k).reshape(deltas[0].shape)
