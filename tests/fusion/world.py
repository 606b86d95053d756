"""Builders for the fusion tests: tiny models with genuinely different tokenizers, briefly trained
on generated instruction–response data so that their distributions carry signal."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from merge.fusion.capture import encode_example, load_model, load_tokenizer, pad_batch
from merge.fusion.data import Example
from node.demo.models import TinySpec, make_model, make_tokenizer


def make_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if rng.random() < 0.5:
            out.append(Example(f"add {a} and {b}", f"the sum is {a + b}"))
        else:
            out.append(Example(f"multiply {a} and {b}", f"the product is {a * b}"))
    return out


def write_jsonl(path: Path, examples: list[Example]) -> Path:
    path.write_text("".join(json.dumps({"instruction": e.instruction, "response": e.response}) + "\n"
                            for e in examples))
    return path


def pretrain(model_dir: Path, examples: list[Example], steps: int, lr: float = 3e-3, batch: int = 16) -> None:
    """A few LM steps on the examples, saved in place (safetensors)."""
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, "cpu").train()
    torch.manual_seed(0)
    enc = [encode_example(tok, e, 128) for e in examples]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        chunk = [enc[(step * batch + i) % len(enc)] for i in range(batch)]
        ids, mask = pad_batch([e.ids for e in chunk], pad_id=0)
        labels = ids.clone()
        labels[mask == 0] = -100
        for row, e in enumerate(chunk):
            labels[row, :e.prompt_len] = -100
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir, safe_serialization=True)


def build_world(root: Path, pretrain_steps: int = 40) -> dict[str, Path]:
    """Two trained sources (llama + byte-level BPE, qwen2 + character-level) and an untrained
    gpt2-style target with a third tokenizer (another BPE vocabulary), plus train/held-out data."""
    root = Path(root)
    spec = TinySpec(n_layers=2, hidden=32, heads=4, intermediate=64, max_positions=128)
    train = make_examples(96, seed=1)
    src_a = make_model(root / "src-bpe", "llama", seed=1,
                       tokenizer_dir=make_tokenizer(root / "tok-bpe", "bpe", vocab_size=384, seed=1), spec=spec)
    src_b = make_model(root / "src-char", "qwen2", seed=2,
                       tokenizer_dir=make_tokenizer(root / "tok-char", "char", seed=1), spec=spec)
    target = make_model(root / "target", "gpt2", seed=3,
                        tokenizer_dir=make_tokenizer(root / "tok-target", "bpe", vocab_size=320, seed=2), spec=spec)
    pretrain(src_a, train, pretrain_steps)
    pretrain(src_b, train, pretrain_steps)
    return {
        "root": root, "src_bpe": src_a, "src_char": src_b, "target": target,
        "train": write_jsonl(root / "train.jsonl", train),
        "heldout": write_jsonl(root / "heldout.jsonl", make_examples(32, seed=99)),
    }
