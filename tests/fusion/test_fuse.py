"""Fusion functions against hand-computed cases, and projection of distributions across vocabularies."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from merge.fusion.align import Projected, project_capture
from merge.fusion.capture import Capture
from merge.fusion.fuse import avg_ce_weights, fuse, min_ce_weights, row_sequence_index


def test_min_ce_picks_lowest_per_sequence():
    ce = torch.tensor([[2.0, 1.0, 3.0], [0.5, 0.7, 0.6], [1.0, 1.0, 2.0]])
    assert min_ce_weights(ce).tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 0]]


def test_avg_ce_is_softmax_of_negative_ce():
    w = avg_ce_weights(torch.tensor([[1.0, 2.0]]))
    e1, e2 = math.exp(-1), math.exp(-2)
    assert torch.allclose(w, torch.tensor([[e1 / (e1 + e2), e2 / (e1 + e2)]], dtype=torch.float64))


def _proj(ids, probs) -> Projected:
    return Projected(ids=torch.tensor(ids), probs=torch.tensor(probs, dtype=torch.float32), aligned=len(ids))


def test_fuse_avg_mixes_rows_with_their_sequence_weights():
    a = _proj([[1, 2], [3, 4], [5, 6]], [[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    b = _proj([[2, 7], [3, 8], [9, 5]], [[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    weights = torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=torch.float64)  # 2 sequences
    row_seq = row_sequence_index(torch.tensor([0, 2, 3]))  # rows 0-1 → seq 0, row 2 → seq 1
    assert row_seq.tolist() == [0, 0, 1]
    fused = fuse([a, b], weights, row_seq)
    dense = torch.zeros(3, 10).scatter_add_(1, fused.ids, fused.probs)
    expected = torch.zeros(3, 10)
    expected[0, 1], expected[0, 2] = 0.25, 0.25 + 0.5
    expected[1, 3], expected[1, 8] = 0.5 + 0.25, 0.25
    expected[2, 5], expected[2, 6], expected[2, 9] = 0.25 * 0.25 + 0.75 * 0.5, 0.25 * 0.75, 0.75 * 0.5
    assert torch.allclose(dense, expected, atol=1e-6)


def test_fuse_min_ce_keeps_only_the_chosen_rows():
    a = _proj([[1, 2]], [[0.9, 0.1]])
    b = _proj([[3, 4]], [[0.6, 0.4]])
    fused = fuse([a, b], min_ce_weights(torch.tensor([[2.0, 1.0]])), torch.tensor([0]))
    assert fused.ids.tolist() == [[3, 4]]
    assert torch.allclose(fused.probs, torch.tensor([[0.6, 0.4]]))


def _capture(seqs: list[tuple[list[int], int]], topk_ids: list[list[int]], logits: list[list[float]]) -> Capture:
    lengths = torch.tensor([len(s) for s, _ in seqs])
    return Capture(
        input_ids=torch.tensor([t for s, _ in seqs for t in s]),
        seq_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)]),
        prompt_lens=torch.tensor([p for _, p in seqs]), topk_ids=torch.tensor(topk_ids),
        topk_logits=torch.tensor(logits), ce_sum=torch.zeros(len(seqs), dtype=torch.float64),
        n_chars=torch.ones(len(seqs), dtype=torch.float64),
    )


def test_projection_uses_one_to_one_pairs_and_falls_back_to_one_hot():
    # source vocab: 0 "<bos>", 1 "Ġthe", 2 "Ġsum", 3 "Ġis"; target: 0 "<bos>", 1 "▁the", 2 "▁su", 3 "m", 4 "▁is"
    src_vocab, tgt_vocab = ["<bos>", "Ġthe", "Ġsum", "Ġis"], ["<bos>", "▁the", "▁su", "m", "▁is"]
    src = _capture([([0, 1, 2, 3], 1)], topk_ids=[[1, 2], [2, 3], [3, 1]],
                   logits=[[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    tgt = _capture([([0, 1, 2, 3, 4], 1)], topk_ids=[[1, 2]] * 4, logits=[[0.0, 0.0]] * 4)
    vmap = np.array([0, 1, 2, 4])  # Ġsum → ▁su (closest), the rest exact
    proj = project_capture(src, tgt, src_vocab, tgt_vocab, vmap)
    # "the" and "is" are one-to-one: they carry the source distributions mapped into the target vocab;
    # "▁su" and "m" both align to "Ġsum" (one-to-many): one-hot on the target's own tokens
    assert proj.aligned == 2
    assert proj.ids[0].tolist() == [1, 2] and torch.allclose(proj.probs[0], torch.softmax(torch.tensor([2.0, 0.0]), 0))
    assert proj.ids[1, 0] == 2 and proj.probs[1].tolist() == [1.0, 0.0]
    assert proj.ids[2, 0] == 3 and proj.probs[2].tolist() == [1.0, 0.0]
    assert proj.ids[3].tolist() == [4, 1] and torch.allclose(proj.probs[3], torch.softmax(torch.tensor([0.0, -1.0]), 0))


def test_projection_of_empty_response_is_all_fallback():
    src = _capture([([0], 1)], topk_ids=torch.zeros((0, 2), dtype=torch.int64).tolist(), logits=[])
    src = Capture(**{**src.__dict__, "topk_ids": torch.zeros((0, 2), dtype=torch.int64),
                     "topk_logits": torch.zeros((0, 2))})
    tgt = _capture([([0, 1], 1)], topk_ids=[[1, 0]], logits=[[0.0, 0.0]])
    proj = project_capture(src, tgt, ["<bos>", "a"], ["<bos>", "a"], np.array([0, 1]))
    assert proj.aligned == 0 and proj.ids[0, 0] == 1 and proj.probs[0, 0] == 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_fused_rows_are_distributions(n_candidates, n_seqs, k, seed):
    gen = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, 4, (n_seqs,), generator=gen)
    rows = int(lens.sum())
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)])
    projections = [_proj(torch.randint(0, 50, (rows, k), generator=gen).tolist(),
                         torch.softmax(torch.randn(rows, k, generator=gen), 1).tolist() if rows else [])
                   for _ in range(n_candidates)]
    projections = [Projected(p.ids.reshape(rows, k), p.probs.reshape(rows, k), p.aligned) for p in projections]
    ce = torch.rand(n_seqs, n_candidates, generator=gen, dtype=torch.float64)
    for weights in (min_ce_weights(ce), avg_ce_weights(ce)):
        fused = fuse(projections, weights, row_sequence_index(offsets))
        assert fused.ids.shape[0] == rows and fused.ids.shape == fused.probs.shape
        assert torch.allclose(fused.probs.sum(1), torch.ones(rows), atol=1e-5)
        assert bool((fused.probs >= 0).all()) and bool(((fused.ids >= 0) & (fused.ids < 50)).all())
        if bool((weights.max(1).values == 1).all()):
            assert fused.ids.shape[1] <= k  # min_ce keeps only the chosen candidate's entries


def test_projection_drops_ids_past_the_tokenizer():
    # the source model's embedding has a padded row 4 that no token owns; it is in the top-k of row 0
    src_vocab, tgt_vocab = ["<bos>", "Ġa", "Ġb", "Ġc"], ["<bos>", "▁a", "▁b", "▁c"]
    from merge.fusion.align import build_vocab_map

    vmap = build_vocab_map(src_vocab, tgt_vocab, needed=[0, 1, 2, 3, 4])
    assert vmap.tolist() == [0, 1, 2, 3, -1]
    src = _capture([([0, 1, 2], 1)], topk_ids=[[4, 2], [3, 1]], logits=[[5.0, 0.0], [0.0, 0.0]])
    tgt = _capture([([0, 1, 2], 1)], topk_ids=[[1, 2], [1, 2]], logits=[[0.0, 0.0]] * 2)
    proj = project_capture(src, tgt, src_vocab, tgt_vocab, vmap)
    assert proj.aligned == 2
    assert proj.probs[0].tolist() == [0.0, 1.0] and proj.ids[0, 1] == 2
    assert torch.allclose(proj.probs[1], torch.tensor([0.5, 0.5]))
