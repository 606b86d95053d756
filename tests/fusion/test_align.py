"""Token alignment (DTW over edit distance) and the vocabulary map, on hand-made sequences, and
equality with the reference FuseLLM double-loop DTW on random ones."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from merge.fusion.align import (
    align_tokens,
    build_vocab_map,
    canonical,
    dtw_cumulative,
    edit_costs,
    strip_markers,
)
from tests.fusion.reference import reference_dtw


def test_one_to_one():
    assert align_tokens(["Ġthe", "Ġcat", "Ġsat"], ["▁the", "▁cat", "▁sat"]) == [(0, 0), (1, 1), (2, 2)]


def test_one_source_token_to_many_target_tokens():
    # "Ġmodel" is split into "▁mod" + "el": both target tokens align to the one source token
    assert align_tokens(["Ġa", "Ġmodel"], ["▁a", "▁mod", "el"]) == [(0, 0), (1, 1), (1, 2)]


def test_many_source_tokens_to_one_target_token():
    # "ad" + "d" together spell the target's "Ġadd"
    assert align_tokens(["▁ad", "d", "▁12"], ["Ġadd", "Ġ12"]) == [(0, 0), (1, 0), (2, 1)]


def test_empty_sequences_align_to_nothing():
    assert align_tokens([], ["a"]) == []
    assert align_tokens(["a"], []) == []
    assert align_tokens([], []) == []


def test_single_token_each():
    assert align_tokens(["x"], ["yyyy"]) == [(0, 0)]


def test_markers_are_stripped_for_costs():
    assert strip_markers("Ġthe") == strip_markers("▁the") == strip_markers("##the") == "the"
    assert canonical("Ġthe") == canonical("▁the") == "▁the"
    assert canonical("##ing") == "ing"
    assert edit_costs(["Ġab"], ["▁abc"]).tolist() == [[1]]


def test_cumulative_cost_matches_definition():
    cost = np.array([[1, 3, 0], [2, 0, 4], [5, 1, 1]])
    acc = dtw_cumulative(cost)
    assert acc.tolist() == [[1, 4, 4], [3, 1, 5], [8, 2, 2]]


words = st.sampled_from(["Ġthe", "▁the", "th", "e", "Ġ1", "2", "12", "▁", "ab", "abc", "Ġsum", "s", "um", "=", "+"])


@settings(max_examples=60, deadline=None)
@given(st.lists(words, min_size=1, max_size=12), st.lists(words, min_size=1, max_size=12))
def test_fast_alignment_equals_reference(src, tgt):
    assert align_tokens(src, tgt) == reference_dtw(src, tgt)


def test_vocab_map_exact_then_stripped_then_closest():
    src = ["Ġthe", "x", "zzq", "<eos>", "##ing", "Ġsum"]
    tgt = ["▁the", "the", "zzz", "<eos>", "x", "ing", "sum"]
    vmap = build_vocab_map(src, tgt)
    # exact canonical: Ġthe → ▁the (0); x → 4; <eos> → 3; ##ing → ing (5)
    # stripped: Ġsum has no "▁sum" in the target, but "sum" (6); closest: zzq → zzz (2)
    assert vmap.tolist() == [0, 4, 2, 3, 5, 6]


def test_vocab_map_only_needed_ids():
    vmap = build_vocab_map(["a", "b", "c"], ["c", "b"], needed=[2])
    assert vmap.tolist() == [-1, -1, 0]


def test_vocab_strings_name_special_tokens_by_role(world):
    from merge.fusion.align import vocab_strings
    from merge.fusion.capture import load_tokenizer

    tok = load_tokenizer(world["src_char"])
    strings = vocab_strings(tok)
    assert strings[tok.eos_token_id] == "<eos>" and strings[tok.bos_token_id] == "<bos>"
    assert len(strings) == len(tok)
