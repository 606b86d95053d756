"""The reference alignment the fast one must equal: FuseLLM's published DTW (a Python double loop
with a per-cell edit distance). Shared by the alignment tests and benchmarks/fusion_bench.py."""

from __future__ import annotations

import numpy as np
from rapidfuzz.distance import Levenshtein

from merge.fusion.align import strip_markers


def reference_dtw(src: list[str], tgt: list[str]) -> list[tuple[int, int]]:
    """FuseLLM's `dtw`: a Python double loop with a per-cell edit distance, then its backtrack."""
    n, m = len(src), len(tgt)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0
    for i in range(n):
        for j in range(m):
            cost = Levenshtein.distance(strip_markers(src[i]), strip_markers(tgt[j]))
            acc[i + 1, j + 1] = cost + min(acc[i, j + 1], acc[i + 1, j], acc[i, j])
    acc = acc[1:, 1:]
    i, j = n - 1, m - 1
    matches = []
    while i > 0 or j > 0:
        matches.append((i, j))
        diag = acc[i - 1, j - 1] if i > 0 and j > 0 else np.inf
        up = acc[i - 1, j] if i > 0 else np.inf
        left = acc[i, j - 1] if j > 0 else np.inf
        move = int(np.argmin([diag, up, left]))
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    matches.append((0, 0))
    return matches[::-1]
