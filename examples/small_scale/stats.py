"""Intervals for the small-scale studies: bootstrap over test items within one training seed, and a
Student-t interval of the across-seed mean.

    lo, hi = bootstrap_ci(correct)                 # 95% percentile interval of an accuracy
    lo, hi = paired_bootstrap_ci(correct_a, correct_b)   # of acc(a) − acc(b), same items
    mean, lo, hi = t_interval([0.41, 0.44, 0.39])  # across seeds

Paired intervals resample the same items for both models, so they measure the difference of two
models on one test set rather than the (larger) noise of either accuracy alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
# Two-sided 97.5% quantiles of Student's t by degrees of freedom (no scipy needed for n ≤ 31).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def _t_quantile(df: int) -> float:
    known = [d for d in T_975 if d <= df]
    return T_975[max(known)] if known else T_975[1]


def bootstrap_ci(correct: Sequence[bool], seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of 0/1 outcomes."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(BOOTSTRAP_RESAMPLES, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_bootstrap_ci(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) − mean(b) over the same items."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_ci(diff.tolist(), seed)  # the resampled mean of ±1/0 differences


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): 95% Student-t interval of the mean over seeds (nan width for one value)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = _t_quantile(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half
