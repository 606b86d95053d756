"""Fixtures for eval/search tests: a char-level tokenizer and a tiny Llama trained to memorize a
handful of arithmetic facts, so that the right answers are known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FACTS = {"12+7=": "19", "3*4=": "12", "20+5=": "25", "6*7=": "42", "9+9=": "18", "8*3=": "24"}
ALPHABET = "0123456789+*="


def char_tokenizer(out_dir: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", *ALPHABET])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(out_dir)
    return out_dir


def train_memorizer(out_dir: Path, steps: int = 200, seed: int = 0) -> Path:
    """A 2-layer Llama that has memorized FACTS (prompt+answer+EOS)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(char_tokenizer(out_dir)))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    seqs = [tok(p + a)["input_ids"] + [tok.eos_token_id] for p, a in FACTS.items()]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = (ids != 0).long()
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread: session fixtures run before it
    try:
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.fixture(scope="session")
def memorizer(tmp_path_factory) -> Path:
    """READ-ONLY folder of the memorizing model."""
    return train_memorizer(tmp_path_factory.mktemp("memorizer") / "model")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On a shared 2-core machine torch's spinning worker threads made tiny-model evals up to
    10x slower; these tests run single-threaded and restore the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def landscape(memorizer, tmp_path_factory) -> dict[str, Path]:
    """A search landscape with a known better point: `good` is the memorizer barely changed,
    `bad` the memorizer drowned in noise; averaging them uniformly hurts, down-weighting `bad`
    helps. READ-ONLY."""
    from node.demo.models import perturb_model

    root = tmp_path_factory.mktemp("landscape")
    good = perturb_model(memorizer, root / "good", seed=1, scale=0.001, density=0.5)
    bad = perturb_model(memorizer, root / "bad", seed=2, scale=0.5, density=1.0)
    tasks = write_jsonl(root / "tasks.jsonl", [{"prompt": p, "answer": a} for p, a in FACTS.items()])
    return {"good": good, "bad": bad, "tasks": tasks, "root": root}


def linear_recipe(path: Path, good: Path, bad: Path) -> Path:
    path.write_text(f"""merge_method: linear
models:
  - model: {good}
    parameters: {{weight: 0.5}}
  - model: {bad}
    parameters: {{weight: 0.5}}
dtype: float32
""")
    return path
