"""The fixtures really have the shapes of their real families, and padding never changes a score:
greedy generation (left-padded) and continuation log-likelihoods (right-padded) of a batch equal
those of each item alone, on every architecture."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from merge.eval import evaluate, load_model, load_tasks
from merge.eval.scoring import continuation_logprobs, encode_pair, generate_greedy, pad_id
from tests.archs.fixtures import ARCHS, FACTS, SPECS, STYLES, TIED

# Prompts of very different token lengths, so that batches hold a lot of padding.
PROMPTS = [*FACTS, "12+7=19\n3*4=12\n20+5=", "9+9=18 6*7="]


def tensor_names(folder) -> dict[str, tuple[int, ...]]:
    out = {}
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as fh:
            out.update({k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()})  # noqa: SIM118
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_fixture_has_the_real_family_shape(arch, shaped):
    from transformers import AutoTokenizer

    base, _ = shaped[arch]
    cfg = json.loads((base / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(base)
    style = STYLES[SPECS[arch].style]
    assert cfg["model_type"] == arch
    assert (tok.pad_token is None) == (style.pad is None)
    if SPECS[arch].pad_vocab:
        assert cfg["vocab_size"] > len(tok) and cfg["vocab_size"] % 64 == 0
    else:
        assert cfg["vocab_size"] == len(tok)
    names = tensor_names(base)
    assert any("lm_head" in n or "embed_out" in n for n in names) == (arch not in TIED)
    if arch == "phi3":
        assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    if arch == "gpt_neox":
        assert "gpt_neox.layers.0.attention.query_key_value.weight" in names
    if arch == "gpt2":  # Conv1D stores (in, out): the fused qkv is 3 × hidden wide in its second dimension
        assert names["transformer.h.0.attn.c_attn.weight"] == (cfg["n_embd"], 3 * cfg["n_embd"])
    if arch in ("mistral", "gemma2"):
        assert cfg["sliding_window"] == 8


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_does_not_change_generation_or_likelihoods(arch, shaped):
    model, tok = load_model(shaped[arch][0])
    device = torch.device("cpu")
    alone = [generate_greedy(model, tok, [p], 6, device)[0] for p in PROMPTS]
    assert generate_greedy(model, tok, PROMPTS, 6, device) == alone
    assert [a.split("\n")[0].strip() for a in alone[:len(FACTS)]] == list(FACTS.values())
    pairs = [encode_pair(tok, p, c) for p in PROMPTS for c in ("19", "1234", " seven")]
    pad = pad_id(tok)
    one = [continuation_logprobs(model, [pair], pad, device)[0] for pair in pairs]
    batched = continuation_logprobs(model, pairs, pad, device)
    assert [k for _, k in batched] == [k for _, k in one]
    assert [lp for lp, _ in batched] == pytest.approx([lp for lp, _ in one], abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_items_agree_across_batch_sizes(arch, shaped, shaped_tasks):
    model, tok = load_model(shaped[arch][0])
    tasks = load_tasks(shaped_tasks)
    one = evaluate(model, tok, tasks, batch_size=1)
    many = evaluate(model, tok, tasks, batch_size=5)
    assert one.correct == many.correct
    assert one.loglik == pytest.approx(many.loglik, abs=1e-5)
    assert one.tasks["gen"] == 1.0  # the base memorized every fact
    assert one.accuracy >= 0.9


def test_pad_falls_back_to_eos_then_bos_and_stays_inside_the_embedding():
    class Tok:
        pad_token_id, eos_token_id, bos_token_id = None, 7, 1

    assert pad_id(Tok()) == 7
    Tok.pad_token_id = 500  # a pad token added to the tokenizer but not to the model's embedding
    assert pad_id(Tok(), rows=100) == 7
    Tok.eos_token_id = None
    assert pad_id(Tok(), rows=100) == 1
