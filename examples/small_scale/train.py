"""Tiny char-level Llama training for the small-scale study: a tokenizer over the arithmetic
alphabet, a model built from a small config, and a plain AdamW loop (pre-training the base and
fine-tuning the experts use the same loop). Saves normal Hugging Face folders (safetensors).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)
ALPHABET = "0123456789+*="
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def make_char_tokenizer(out_dir: Path) -> Path:
    """One token per character, no word-boundary marker (so a prompt and its answer tokenize
    the same apart as together), BOS prepended, decoding concatenates."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, *ALPHABET])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class ModelSpec:
    n_layers: int = 4
    hidden: int = 96
    heads: int = 4
    intermediate: int = 256


def init_model(out_dir: Path, tokenizer_dir: Path, spec: ModelSpec, seed: int) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.n_layers, num_attention_heads=spec.heads,
                         num_key_value_heads=spec.heads, max_position_embeddings=64, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    lr: float = 3e-3
    batch: int = 128
    warmup: int = 50
    seed: int = 0


def train(src: Path, dst: Path, lines: list[str], spec: TrainSpec) -> dict:
    """Train the model in `src` on `lines` (loss on every real token), save to `dst`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    model.train()
    encoded = [tok(line)["input_ids"] + [tok.eos_token_id] for line in lines]
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
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = torch.tensor(s)
        mask = (ids != tok.pad_token_id).long()
        labels = ids.masked_fill(mask == 0, -100)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 200 == 0 or step == spec.steps - 1:
            log.info("%s step %d/%d loss %.4f", dst.name, step, spec.steps, loss)
    model.eval()
    model.save_pretrained(dst, safe_serialization=True)
    tok.save_pretrained(dst)
    return {"steps": spec.steps, "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "seconds": round(time.time() - start, 1)}
