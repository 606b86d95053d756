"""Step 2: align source tokens to target tokens and carry the source distributions across.

Token sequences from different tokenizers are aligned by dynamic time warping over the edit
distance of their token strings (word-boundary markers `Ġ`, `▁`, `##` stripped), as in FuseLLM.
The edit-distance matrix comes from rapidfuzz in one call; the DTW recurrence is solved a row at a
time in numpy (a min-plus prefix scan, see `dtw_cumulative`), so a 2048×2048 pair takes tens of
milliseconds instead of the seconds a per-cell Python loop needs.

    pairs = align_tokens(["the", "cat"], ["th", "e", "cat"])   # [(0, 0), (0, 1), (1, 2)]
    vmap = build_vocab_map(src_vocab, tgt_vocab)                 # source id -> target id
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from merge.fusion.capture import Capture

BOUNDARY_MARKERS = ("Ġ", "▁")
WORDPIECE_CONTINUATION = "##"
SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
VOCAB_CHUNK_ROWS = 256  # rows of the unmatched × target-vocab distance matrix computed at once


def strip_markers(token: str) -> str:
    """The token's text without word-boundary markers: what edit distances compare."""
    if token.startswith(WORDPIECE_CONTINUATION) and len(token) > len(WORDPIECE_CONTINUATION):
        token = token[len(WORDPIECE_CONTINUATION):]
    for marker in BOUNDARY_MARKERS:
        token = token.replace(marker, "")
    return token


def canonical(token: str) -> str:
    """One spelling of a boundary for every tokenizer (`Ġthe`, `▁the` → `▁the`; `##ing` → `ing`)."""
    if token.startswith(WORDPIECE_CONTINUATION) and len(token) > len(WORDPIECE_CONTINUATION):
        return token[len(WORDPIECE_CONTINUATION):]
    return token.replace("Ġ", "▁")


def vocab_strings(tok: Any) -> list[str]:
    """Token string of every id, with the special tokens renamed by role (`<eos>`, ...) so that
    `</s>` and `<|endoftext|>` are the same token to the alignment and the vocabulary map."""
    strings = [t if isinstance(t, str) else "" for t in tok.convert_ids_to_tokens(list(range(len(tok))))]
    for role in SPECIAL_ROLES:
        token_id = getattr(tok, f"{role}_id", None)
        if isinstance(token_id, int) and 0 <= token_id < len(strings):
            strings[token_id] = f"<{role.removesuffix('_token')}>"
    return strings


def edit_costs(src: Sequence[str], tgt: Sequence[str], workers: int = 1, stripped: bool = False) -> np.ndarray:
    """(len(src), len(tgt)) Levenshtein distances of the marker-stripped strings."""
    if not stripped:
        src, tgt = [strip_markers(s) for s in src], [strip_markers(t) for t in tgt]
    return process.cdist(src, tgt, scorer=Levenshtein.distance, dtype=np.int32, workers=workers)


def dtw_cumulative(cost: np.ndarray) -> np.ndarray:
    """Accumulated DTW cost D[i, j] = cost[i, j] + min(D[i-1, j], D[i, j-1], D[i-1, j-1]).

    Within a row the left neighbour makes the recurrence sequential, but it unrolls into a prefix
    scan: with S the row's running cost sum and A[k] = min(D[i-1, k], D[i-1, k-1]),
    D[i, j] = S[j] + min_{k ≤ j}(A[k] − S[k−1]) — one `np.minimum.accumulate` per row.
    Integer arithmetic keeps ties exact, so the path equals the reference loop's.
    """
    cost = cost.astype(np.int64, copy=False)
    n, m = cost.shape
    running = np.cumsum(cost, axis=1)  # S[i, j]
    before = running - cost  # S[i, j - 1]
    acc = np.empty((n, m), dtype=np.int64)
    acc[0] = running[0]
    enter = np.empty(m, dtype=np.int64)
    for i in range(1, n):
        prev = acc[i - 1]
        enter[0] = prev[0]
        np.minimum(prev[1:], prev[:-1], out=enter[1:])
        np.subtract(enter, before[i], out=enter)
        np.minimum.accumulate(enter, out=enter)
        np.add(running[i], enter, out=acc[i])
    return acc


def dtw_path(acc: np.ndarray) -> list[tuple[int, int]]:
    """Backtrack from the last cell, preferring diagonal, then up, then left on ties (FuseLLM's order)."""
    n, m = acc.shape
    if n == 0 or m == 0:
        return []
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        elif i > 0:
            i -= 1
        else:
            j -= 1
        path.append((i, j))
    path.reverse()
    return path


def align_tokens(src: Sequence[str], tgt: Sequence[str], workers: int = 1,
                 stripped: bool = False) -> list[tuple[int, int]]:
    """Monotone alignment of two token-string sequences as (source index, target index) pairs;
    `stripped=True` says the markers are already gone."""
    if not src or not tgt:
        return []
    return dtw_path(dtw_cumulative(edit_costs(src, tgt, workers, stripped)))


def build_vocab_map(src_vocab: Sequence[str], tgt_vocab: Sequence[str], needed: Sequence[int] | None = None,
                    workers: int = 1) -> np.ndarray:
    """Source id → target id: same canonical string, else same marker-stripped string, else the target
    token closest by edit distance (lowest id on ties). Only `needed` ids are mapped (others −1):
    a 32k × 150k distance matrix is wasted work when the data touches a few thousand tokens.
    Ids past the tokenizer (embedding rows padded beyond the vocabulary) have no string: −1 too."""
    exact: dict[str, int] = {}
    stripped: dict[str, int] = {}
    for tid, tok in enumerate(tgt_vocab):
        exact.setdefault(canonical(tok), tid)
        stripped.setdefault(strip_markers(tok), tid)
    ids = np.arange(len(src_vocab)) if needed is None else np.unique(np.asarray(needed, dtype=np.int64))
    vmap = np.full(max(len(src_vocab), int(ids.max(initial=-1)) + 1), -1, dtype=np.int64)
    ids = ids[ids < len(src_vocab)]
    pending = []
    for sid in ids.tolist():
        tok = src_vocab[sid]
        hit = exact.get(canonical(tok), stripped.get(strip_markers(tok)))
        if hit is None:
            pending.append(sid)
        else:
            vmap[sid] = hit
    tgt_stripped = [strip_markers(t) for t in tgt_vocab]
    for start in range(0, len(pending), VOCAB_CHUNK_ROWS):
        chunk = pending[start:start + VOCAB_CHUNK_ROWS]
        dist = process.cdist([strip_markers(src_vocab[s]) for s in chunk], tgt_stripped,
                             scorer=Levenshtein.distance, dtype=np.int32, workers=workers)
        vmap[chunk] = dist.argmin(axis=1)
    return vmap


@dataclass(frozen=True)
class Projected:
    """A source's distributions carried onto the target's response tokens (rows = target rows)."""

    ids: torch.Tensor  # (R_target, k) int64 target-vocabulary ids
    probs: torch.Tensor  # (R_target, k) float32, each row sums to 1
    aligned: int  # rows that carry the source's distribution (the rest are one-hot fallbacks)


def project_capture(src: Capture, tgt: Capture, src_vocab: Sequence[str], tgt_vocab: Sequence[str],
                    vmap: np.ndarray, progress: Callable[[int, int], None] | None = None) -> Projected:
    """Map each source's top-k distributions onto the target's response positions.

    A target token gets the source distribution only where the alignment is one-to-one and the two
    tokens agree (same stripped text, or the vocabulary map says so); one-to-many and many-to-one
    spans have no single source distribution predicting that target token, so there, as in FuseLLM,
    the row is one-hot on the target's own next token.
    """
    k = src.topk_ids.shape[1]
    src_rows, tgt_rows = src.resp_offsets(), tgt.resp_offsets()
    n_tgt = int(tgt_rows[-1])
    ids = torch.empty((n_tgt, k), dtype=torch.int64)
    probs = torch.zeros((n_tgt, k), dtype=torch.float32)
    mapped_ids = torch.from_numpy(vmap)[src.topk_ids]
    # Unmapped ids (padded embedding rows without a token) lose their mass; the rest is renormalized.
    src_probs = torch.softmax(src.topk_logits.float(), dim=-1) * (mapped_ids >= 0)
    src_probs = src_probs / src_probs.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    mapped_ids = mapped_ids.clamp(min=0)
    src_plain = np.array([strip_markers(t) for t in src_vocab], dtype=object)
    tgt_plain = np.array([strip_markers(t) for t in tgt_vocab], dtype=object)
    aligned = 0
    for s in range(tgt.n_seqs):
        s_ids, t_ids = src.response_ids(s).numpy(), tgt.response_ids(s).numpy()
        t0, s0 = int(tgt_rows[s]), int(src_rows[s])
        ids[t0:t0 + len(t_ids)] = torch.from_numpy(t_ids)[:, None]
        probs[t0:t0 + len(t_ids), 0] = 1.0
        pairs = np.asarray(align_tokens(src_plain[s_ids].tolist(), tgt_plain[t_ids].tolist(), stripped=True))
        if progress:
            progress(s + 1, tgt.n_seqs)
        if not len(pairs):
            continue
        i, j = pairs[:, 0], pairs[:, 1]
        one_to_one = (np.bincount(i, minlength=len(s_ids))[i] == 1) & (np.bincount(j, minlength=len(t_ids))[j] == 1)
        agree = (vmap[s_ids[i]] == t_ids[j]) | (src_plain[s_ids[i]] == tgt_plain[t_ids[j]])
        keep = one_to_one & agree
        rows_t, rows_s = torch.from_numpy(t0 + j[keep]), torch.from_numpy(s0 + i[keep])
        ids[rows_t], probs[rows_t] = mapped_ids[rows_s], src_probs[rows_s]
        aligned += int(keep.sum())
    return Projected(ids=ids, probs=probs, aligned=aligned)


def identity_projection(cap: Capture) -> Projected:
    """The target's own distributions need no alignment: its top-k rows as they are."""
    return Projected(ids=cap.topk_ids.clone(), probs=torch.softmax(cap.topk_logits.float(), dim=-1),
                     aligned=int(cap.topk_ids.shape[0]))
