"""Sparsification of task vectors: magnitude trimming (TIES), outlier-aware trimming
(breadcrumbs), Bernoulli dropping (DARE) and magnitude-ranked dropping (DELLA).

    delta = magnitude(delta, density=0.3)               # keep the 30% largest |delta|
    trim = plan_trim(delta, density=0.3)                # the same decision, applied block-wise later
    delta = bernoulli(delta, density=0.3, generator=g)  # DARE: drop, then restore the L1 norm
    delta = magprune(delta, density=0.3, epsilon=0.1, generator=g)  # DELLA: magnitude-ranked drop

Trimming keeps k = max(1, int(density·numel)) entries (density ≥ 1 keeps all, ≤ 0 none), as
mergekit does. Entries tied with the k-th largest magnitude are kept lowest index first, so the
result is deterministic (mergekit's argsort is not stable on large CPU tensors). All functions
may overwrite their input and return it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from merge.lazy import torch

# Below this many elements kthvalue on the whole tensor is cheap; above it we first bracket the
# threshold with a strided sample so that kthvalue only sees a thin band (kthvalue copies its
# input and allocates int64 indices, which would be 3× the tensor in scratch memory).
DIRECT_SELECT_MAX = 1 << 18
SAMPLE_SIZE = 1 << 16
# Elements per block of the block-wise passes: 4 MB of float32, so a block's handful of
# temporaries stays in L2/L3, while blocks are few enough that the per-op thread synchronisation
# does not dominate when other processes compete for the cores.
BLOCK = 1 << 20
L1_EPS = 1e-7


def kth_largest(a: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of `a` (1 ≤ k ≤ numel), exact, in O(numel) time and small scratch."""
    flat = a.reshape(-1)
    n = flat.numel()
    if n <= DIRECT_SELECT_MAX:
        return flat.kthvalue(n - k + 1).values
    step = max(1, n // SAMPLE_SIZE)
    sample = flat[::step].sort().values
    m = sample.numel()
    q = 1.0 - k / n  # quantile of the threshold
    margin = 6.0 * math.sqrt(m * q * (1 - q)) + 32
    lo = sample[max(0, int(q * m - margin))]
    hi = sample[min(m - 1, int(q * m + margin))]
    above = int((flat > hi).sum())
    if above < k:
        band = flat[(flat >= lo) & (flat <= hi)]
        if above + band.numel() >= k:
            return band.kthvalue(band.numel() - (k - above) + 1).values
    return flat.kthvalue(n - k + 1).values  # the sample misled us: exact fallback


def topk_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of `a`; ties at the threshold go to lower indices."""
    if k >= a.numel():
        return torch.ones_like(a, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(a, dtype=torch.bool)
    thr = kth_largest(a, k)
    mask = a > thr
    need = k - int(mask.sum())
    if need > 0:
        eq = (a == thr).reshape(-1).nonzero().reshape(-1)[:need]
        mask.reshape(-1)[eq] = True
    return mask


@dataclass(frozen=True)
class Trim:
    """Magnitude trimming decided for one whole tensor, applied block by block.

    Entries with |x| > threshold stay, entries below go; of the `n_tied` entries equal to the
    threshold the first `keep_tied` (by index) stay.
    """

    threshold: float
    keep_tied: int
    n_tied: int


def plan_trim(delta: torch.Tensor, density: float) -> Trim | None:
    """The trim that keeps the `density` share of largest magnitudes; None when nothing is dropped."""
    n = delta.numel()
    k = trim_count(density, n)
    if k >= n:
        return None
    if k == 0:
        return Trim(math.inf, 0, 0)
    thr, n_gt, n_eq = _kth_abs(delta.reshape(-1), k)
    if thr == 0:  # every nonzero entry survives; dropping zeros changes nothing
        return None
    return Trim(thr, k - n_gt, n_eq)


def _kth_abs(flat: torch.Tensor, k: int) -> tuple[float, int, int]:
    """(k-th largest |x|, how many |x| exceed it, how many equal it), reading `flat` once in blocks."""
    n = flat.numel()
    if n > DIRECT_SELECT_MAX and flat.device.type == "cpu":  # a GPU selects on the whole tensor at once
        step = max(1, n // SAMPLE_SIZE)
        sample = flat[::step].abs().sort().values
        m = sample.numel()
        q = 1.0 - k / n
        margin = 6.0 * math.sqrt(m * q * (1 - q)) + 32
        lo = float(sample[max(0, int(q * m - margin))])
        hi = float(sample[min(m - 1, int(q * m + margin))])
        above, bands = 0, []
        for start in range(0, n, BLOCK):
            a = flat[start:start + BLOCK].abs()
            above += int((a > hi).sum())
            bands.append(a[(a >= lo) & (a <= hi)])
        band = torch.cat(bands)
        if above < k <= above + band.numel():
            thr = band.kthvalue(band.numel() - (k - above) + 1).values
            return float(thr), above + int((band > thr).sum()), int((band == thr).sum())
    a = flat.abs()  # small tensor, or the sample misled us: exact on the whole tensor
    thr = a.kthvalue(n - k + 1).values
    return float(thr), int((a > thr).sum()), int((a == thr).sum())


class TrimCursor:
    """Applies a Trim to consecutive blocks of one tensor, tracking tied entries already kept."""

    def __init__(self, trim: Trim) -> None:
        self.trim = trim
        self.tied_seen = 0

    def apply(self, block: torch.Tensor) -> None:
        t = self.trim
        a = block.abs()
        if t.keep_tied >= t.n_tied or t.keep_tied == 0:
            # multiply by the 0/1 keep mask built in place: no boolean temporaries
            keep = a.ge_(t.threshold) if t.keep_tied else a.gt_(t.threshold)
            block.mul_(keep)
            return
        tied = a == t.threshold
        block.mul_(a.ge_(t.threshold))
        count = int(tied.sum())
        room = max(0, t.keep_tied - self.tied_seen)
        if room == 0:
            block.masked_fill_(tied, 0)
        elif count > room:
            block.view(-1)[tied.view(-1).nonzero().view(-1)[room:]] = 0
        self.tied_seen += count


def trim_count(density: float, numel: int) -> int:
    """How many entries magnitude trimming keeps."""
    if density >= 1:
        return numel
    if density <= 0 or numel == 0:
        return 0
    return max(1, int(density * numel))


def rescale_l1(masked: torch.Tensor, l1_before: torch.Tensor) -> torch.Tensor:
    """Scale `masked` back to the L1 norm it had before masking (mergekit's `rescale` for trimming)."""
    after = masked.abs().sum()
    if l1_before >= L1_EPS and after >= L1_EPS:
        masked.mul_(l1_before / after)
    return masked


def magnitude(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep the `density` share of entries with the largest magnitude, zero the rest."""
    k = trim_count(density, delta.numel())
    if k >= delta.numel():
        return delta
    l1 = delta.abs().sum() if rescale else None
    mag = delta.abs()
    keep = topk_mask(mag, k)
    del mag
    delta.mul_(keep)
    return rescale_l1(delta, l1) if rescale else delta


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float = 0.01, rescale: bool = False) -> torch.Tensor:
    """Breadcrumbs: drop the `gamma` share of largest magnitudes, then the smallest, keeping `density`.

    As in mergekit: target = int(density·n), top = int(gamma·n), bottom = max(0, n − target − top);
    the entries ranked bottom+1 … bottom+target from the smallest are kept.
    """
    if density >= 1:
        return delta
    n = delta.numel()
    target = max(0, int(density * n))
    bottom = max(0, n - target - int(gamma * n))
    l1 = delta.abs().sum() if rescale else None
    mag = delta.abs()
    keep = topk_mask(mag, n - bottom)
    if n - bottom - target > 0:
        keep &= ~topk_mask(mag, n - bottom - target)
    del mag
    delta.mul_(keep)
    return rescale_l1(delta, l1) if rescale else delta


def bernoulli(delta: torch.Tensor, density: float, generator: torch.Generator | None,
              rescale: bool = True, paper: bool = False) -> torch.Tensor:
    """DARE: keep each entry with probability `density`.

    With `rescale` the survivors are scaled back to the L1 norm the whole task vector had
    (mergekit 0.1.5's `rescale`), or with `paper` divided by density as in the DARE paper (the
    two agree in expectation; the L1 version also undoes the variance of the kept share).
    """
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    l1 = delta.abs().sum() if rescale and not paper else None
    keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    delta.mul_(keep)
    del keep
    if rescale and paper:
        delta.div_(density)
    elif rescale:
        rescale_l1(delta, l1)
    return delta


def magprune(delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator | None,
             rescale: bool = True, paper: bool = False) -> torch.Tensor:
    """DELLA's MAGPRUNE: keep each entry with a probability that grows with its magnitude rank.

    Within each row (a 1-D tensor is one row) the entry of rank r (0 = smallest |x|, ties by
    index) of n is kept with p = density − ε + 2ε·r/(n − 1), so the mean keep rate is `density`.
    `rescale` restores the L1 norm (mergekit) or, with `paper`, divides each survivor by its own
    p (the DELLA paper). mergekit refuses density ± ε outside (0, 1); here p is clipped to
    [0, 1] instead, so a search may roam the density freely. A one-column row keeps p = density.
    """
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    rows = delta if delta.dim() >= 2 else delta.reshape(1, -1)  # (rows, n, ...) as mergekit ranks along dim 1
    n = rows.shape[1]
    order = torch.argsort(rows.abs(), dim=1, stable=True)
    ranks = torch.empty_like(order)
    position = torch.arange(n, device=delta.device).reshape(1, n, *([1] * (rows.dim() - 2)))
    ranks.scatter_(1, order, position.expand_as(order))
    del order
    if n > 1:
        p = ranks.to(torch.float32).mul_(2 * epsilon / (n - 1)).add_(density - epsilon).clamp_(0, 1)
    else:
        p = torch.full(rows.shape, density, dtype=torch.float32, device=delta.device)
    del ranks
    l1 = rows.abs().sum() if rescale and not paper else None
    keep = torch.rand(rows.shape, generator=generator, device=delta.device) < p
    rows.mul_(keep)
    del keep
    if rescale and paper:
        rows.div_(p.clamp_(min=L1_EPS))  # dropped entries are 0 either way; kept ones have p > 0
    elif rescale:
        rescale_l1(rows, l1)
    return rows.reshape(delta.shape)
