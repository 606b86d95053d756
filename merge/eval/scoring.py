"""Scoring primitives: greedy generation with exact match, and continuation log-likelihoods
(used for multiple-choice items and for the gold answer of generation items).

Both work on batches of prompts with a loaded causal LM and its tokenizer; `harness.py` groups
tasks into batches and aggregates. Nothing here prints or reads files.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Extra new tokens allowed beyond the longest gold answer in a batch: the answer may tokenize
# differently after the prompt, and the model needs room to end it (newline / EOS).
GEN_MARGIN_TOKENS = 3
# Stripped from word edges; signs, "%" and "$" are kept because "-5" and "5" are different answers.
_EDGE_PUNCT = ".,;:!?\"'`()[]{}"


def normalize(text: str) -> str:
    """Lowercase, collapse whitespace and drop punctuation at word edges ("19." == "19")."""
    words = (w.strip(_EDGE_PUNCT) for w in text.lower().split())
    return " ".join(w for w in words if w)


def first_answer(continuation: str, gold: str) -> str:
    """The normalized first answer of a continuation: its first line, cut to as many words as
    the gold answer has (so "19 and more" answers "19", while "1" never matches "19")."""
    line = continuation.split("\n", 1)[0]
    n_words = max(1, len(normalize(gold).split()))
    return " ".join(normalize(line).split()[:n_words])


def exact_match(continuation: str, gold: str) -> bool:
    return first_answer(continuation, gold) == normalize(gold)


def pad_id(tokenizer) -> int:
    """The id used for padding: pad, else EOS, else 0 (padded positions are masked anyway)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, device: torch.device) -> list[str]:
    """Greedy continuations of a batch of prompts (left-padded), decoded without special tokens."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right, so pad on the left
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    pad = pad_id(tokenizer)
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id, temperature=None, top_p=None, top_k=None,
    )
    new = out[:, enc["input_ids"].shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new.tolist()]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, encoded apart so that the continuation's tokens
    are exactly the ones scored; trailing context spaces move to the continuation (as
    lm-evaluation-harness does) so " 4" is not split into " " + "4"."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    ctx = list(tokenizer(stripped)["input_ids"]) if stripped else []
    if not ctx:  # the first scored token needs a position to be predicted from
        ctx = [pad_id(tokenizer) if tokenizer.bos_token_id is None else int(tokenizer.bos_token_id)]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return ctx, list(cont)


@torch.no_grad()
def continuation_logprobs(model, pairs: Sequence[tuple[list[int], list[int]]], pad: int,
                          device: torch.device) -> list[tuple[float, int]]:
    """(sum of log-probabilities, token count) of each continuation given its context, for one
    right-padded batch of (context ids, continuation ids) pairs."""
    seqs = [ctx + cont for ctx, cont in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logp = torch.log_softmax(logits, dim=-1)  # (batch, width, vocab)
    results = []
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            results.append((0.0, 0))
            continue
        # logits at position p predict token p + 1
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=logp.device)
        targets = torch.tensor(cont, dtype=torch.long, device=logp.device)
        results.append((float(logp[i, positions, targets].sum()), len(cont)))
    return results
