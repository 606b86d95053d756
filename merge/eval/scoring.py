"""Scoring primitives: greedy generation with exact match, and continuation log-likelihoods
(used for multiple-choice items and for the gold answer of generation items).

Both work on batches of prompts with a loaded causal LM and its tokenizer; `harness.py` groups
tasks into batches and aggregates. Nothing here prints or reads files.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merge.errors import MergeInputError

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


def pad_id(tokenizer, rows: int | None = None) -> int:
    """The id written into padded positions: the tokenizer's pad, else EOS, else BOS, else 0, as
    transformers users pad tokenizers that have none (GPT-2, Llama, Mistral). Padded positions are
    masked out, but their ids are still looked up in the embedding, so an id the embedding lacks
    (`rows`; a pad token added to the tokenizer but not to the model) is passed over."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tid is not None and (rows is None or 0 <= int(tid) < rows):
            return int(tid)
    return 0


def embedding_rows(model) -> int:
    """Rows of the input embedding: the ids the model can look up (often more than the tokenizer
    has, when the vocabulary is padded to a multiple of 64 or 128)."""
    return int(model.get_input_embeddings().weight.shape[0])


def check_ids(tokenizer, seqs: Sequence[Sequence[int]], rows: int) -> None:
    """Refuse token ids the embedding has no row for, naming the token: otherwise torch fails deep
    inside the model with "index out of range in self"."""
    for seq in seqs:
        bad = next((t for t in seq if not 0 <= t < rows), None)
        if bad is not None:
            token = tokenizer.convert_ids_to_tokens(bad)
            raise MergeInputError(
                f"the tokenizer produced token id {bad} ({token!r}) but the model's embedding has {rows} rows; "
                "the tokenizer does not match the model (use the model's own tokenizer, or resize its embeddings)")


def _start_id(tokenizer) -> int:
    """The token a sequence starts from when its text encodes to nothing (tokenizers without BOS)."""
    return pad_id(tokenizer) if tokenizer.bos_token_id is None else int(tokenizer.bos_token_id)


def pad_left(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, T) ids and attention mask: generation appends on the right, so every row's
    last real token must sit in the last column. Position ids are not built here: `generate`
    derives them from the mask (cumsum − 1), which starts every row at position 0."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def pad_right(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and attention mask: with real tokens first, the default positions
    0..T−1 are each row's own, and a causal model never attends to the padding on its right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def stop_ids(model, tokenizer) -> list[int] | None:
    """EOS ids generation stops at: the tokenizer's and the generation config's (Llama 3 chat
    models end turns with <|eot_id|>, listed only there)."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    out = list(dict.fromkeys(int(t) for t in ids if t is not None))
    return out or None


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, device: torch.device) -> list[str]:
    """Greedy continuations of a batch of prompts (left-padded), decoded without special tokens.

    The batch is padded here rather than by the tokenizer, which refuses to pad without a pad
    token and whose padding side is shared state."""
    rows = embedding_rows(model)
    pad = pad_id(tokenizer, rows)
    seqs = [list(tokenizer(p)["input_ids"]) or [_start_id(tokenizer)] for p in prompts]
    check_ids(tokenizer, seqs, rows)
    ids, mask = pad_left(seqs, pad)
    out = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens, do_sample=False,
        num_beams=1, pad_token_id=pad, eos_token_id=stop_ids(model, tokenizer), temperature=None, top_p=None,
        top_k=None,
    )
    new = out[:, ids.shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new.tolist()]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation such that the continuation's tokens are exactly the
    ones scored. Trailing context spaces move to the continuation (as lm-evaluation-harness does)
    so " 4" is not split into " " + "4". The continuation is taken from the encoding of the whole
    text when that starts with the context's own encoding: SentencePiece-style tokenizers put a
    word-boundary `▁` in front of any text encoded alone, which would score " 4" for "4". When a
    token spans the boundary, the two are encoded apart."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    ctx = list(tokenizer(stripped)["input_ids"]) if stripped else []
    cont = None
    if ctx:
        whole = list(tokenizer(stripped + continuation)["input_ids"])
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            cont = whole[len(ctx):]
    else:  # the first scored token needs a position to be predicted from
        ctx = [_start_id(tokenizer)]
    if cont is None:
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return ctx, cont


@torch.no_grad()
def continuation_logprobs(model, pairs: Sequence[tuple[list[int], list[int]]], pad: int,
                          device: torch.device) -> list[tuple[float, int]]:
    """(sum of log-probabilities, token count) of each continuation given its context, for one
    right-padded batch of (context ids, continuation ids) pairs (ids checked with `check_ids`)."""
    seqs = [ctx + cont for ctx, cont in pairs]
    ids, mask = pad_right(seqs, pad)
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
