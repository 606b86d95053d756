"""Tiny-model training for the small-scale studies: a char tokenizer over the arithmetic alphabet,
models built with `node/demo/models.py`, and one plain AdamW loop (pre-training a base, fine-tuning
experts and the joint control all use it). Saves normal Hugging Face folders (safetensors).

    tok = make_char_tokenizer(work / "tok")
    init = make_model(work / "init", "llama", seed, tok, SPEC)
    stats = cached_train(init, work / "base", lambda: pairs, TrainSpec(steps=1000), key={...})

Loss is on answer tokens (and EOS) only: the prompts are random operands, so their tokens carry
no signal, and every model in both studies is scored on its answers.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)
ALPHABET = "0123456789+*=,"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def make_char_tokenizer(out_dir: Path, alphabet: str = ALPHABET, specials_last: bool = False) -> Path:
    """One token per character, no word-boundary marker (so a prompt and its answer tokenize
    the same apart as together), BOS prepended, decoding concatenates. `specials_last` puts the
    special tokens after the characters: another id layout for the same strings (the fusion
    study's target), so the vocabulary mapping between tokenizers is really exercised."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    order = [*alphabet, PAD, BOS, EOS] if specials_last else [PAD, BOS, EOS, *alphabet]
    vocab = {tok: i for i, tok in enumerate(order)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    lr: float = 3e-3
    batch: int = 64
    warmup: int = 50
    seed: int = 0


def encode(tok, prompt: str, answer: str) -> tuple[list[int], int]:
    """(ids, prompt length): the prompt with the tokenizer's specials, then the answer and EOS —
    the layout `merge.fusion.capture.encode_example` and `merge.eval` use, so training, fusion
    and evaluation see the same tokens."""
    ctx = list(tok(prompt)["input_ids"])
    return ctx + list(tok(answer, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id], len(ctx)


def train(src: Path, dst: Path, pairs: list[tuple[str, str]], spec: TrainSpec) -> dict:
    """Train the model in `src` on (prompt, answer) pairs, save to `dst`; returns loss and time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    model.train()
    encoded = [encode(tok, p, a) for p, a in pairs]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rng = random.Random(spec.seed)
    torch.manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < spec.warmup:
            return spec.lr * (step + 1) / spec.warmup
        frac = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    start, losses = time.time(), []
    for step in range(spec.steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(spec.batch)]
        width = max(len(s) for s, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (s, plen) in enumerate(batch):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            labels[i, plen: len(s)] = ids[i, plen: len(s)]  # answer + EOS only
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 500 == 0 or step == spec.steps - 1:
            log.info("%s step %d/%d loss %.4f", dst.name, step, spec.steps, losses[-1])
    model.eval()
    model.save_pretrained(dst, safe_serialization=True)
    tok.save_pretrained(dst)
    tail = losses[-50:]
    return {"steps": spec.steps, "final_loss": sum(tail) / len(tail), "seconds": round(time.time() - start, 1)}


def cached_train(src: Path, dst: Path, pairs: Callable[[], list[tuple[str, str]]], spec: TrainSpec,
                 key: dict) -> dict:
    """Train unless `dst` already holds a model trained from the same settings (training is
    deterministic single-threaded, so a rerun would produce the same weights)."""
    marker = dst / "trained.json"
    want = {**key, "spec": asdict(spec)}
    if marker.is_file() and json.loads(marker.read_text()).get("key") == want:
        log.info("reusing %s", dst)
        return json.loads(marker.read_text())["stats"]
    stats = train(src, dst, pairs(), spec)
    marker.write_text(json.dumps({"key": want, "stats": stats}))
    return stats
