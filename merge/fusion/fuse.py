"""Step 3a: fuse the aligned distributions of all candidates into one target per response token.

Candidates are the target itself and every source, each already projected onto the target's
response tokens. Per sequence, each candidate's quality is its cross-entropy on the reference
response (nats per character, so that tokenizers of different granularity compare fairly):

- `min_ce` (FuseLLM's MinCE): the distribution of the candidate with the lowest cross-entropy;
- `avg_ce`: a mixture weighted by softmax(−CE) over the candidates.

    weights = FUSION_FUNCTIONS["avg_ce"](ce)                      # (S, M)
    fused = fuse(projections, weights, row_seq)                   # sparse rows over the target vocab
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from merge.fusion.align import Projected


def min_ce_weights(ce: torch.Tensor) -> torch.Tensor:
    """(S, M) one-hot on the lowest-CE candidate per sequence (the first one on ties)."""
    return torch.nn.functional.one_hot(ce.argmin(dim=1), ce.shape[1]).to(torch.float64)


def avg_ce_weights(ce: torch.Tensor) -> torch.Tensor:
    """(S, M) softmax over negative cross-entropies: better candidates weigh more."""
    return torch.softmax(-ce.to(torch.float64), dim=1)


FUSION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "min_ce": min_ce_weights,
    "avg_ce": avg_ce_weights,
}


@dataclass(frozen=True)
class Fused:
    """Sparse fused distributions: row r puts `probs[r, c]` on target id `ids[r, c]` (ids may repeat)."""

    ids: torch.Tensor  # (R, K) int64
    probs: torch.Tensor  # (R, K) float32, rows sum to 1
    weights: torch.Tensor  # (S, M) float64, candidate weights per sequence


def fuse(projections: Sequence[Projected], weights: torch.Tensor, row_seq: torch.Tensor) -> Fused:
    """Mix the candidates' rows with their sequence's weights (rows of candidates side by side)."""
    used = [m for m in range(len(projections)) if bool((weights[:, m] > 0).any())]
    fused_ids = torch.cat([projections[m].ids for m in used], dim=1)
    fused_probs = torch.cat([projections[m].probs * weights[row_seq, m].to(torch.float32)[:, None] for m in used],
                            dim=1)
    if len(used) > 1:
        # Keep rows narrow: move each row's non-zero entries first and cut at the widest row, so under
        # min_ce a row holds only its chosen candidate's k entries.
        keep = fused_probs > 0
        width = max(int(keep.sum(dim=1).max()), 1) if fused_probs.numel() else 1
        order = torch.argsort(keep.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
        fused_ids, fused_probs = fused_ids.gather(1, order), fused_probs.gather(1, order)
    fused_probs = fused_probs / fused_probs.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return Fused(ids=fused_ids, probs=fused_probs, weights=weights)


def row_sequence_index(resp_offsets: torch.Tensor) -> torch.Tensor:
    """(R,) sequence index of every response row."""
    lens = resp_offsets[1:] - resp_offsets[:-1]
    return torch.repeat_interleave(torch.arange(lens.numel()), lens)
