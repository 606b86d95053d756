"""The output vocabulary of a recipe with tokenizer settings, as mergekit 0.1.5 builds it.

    out = build_vocab(spec, base="/m/base", vocabs={"/m/base": v0, "/m/a": v1})
    out.vocab, out.rows, out.doc     # token → id, embedding rows, tokenizer.json (None: copied as is)
    perm = out.permutation(v1)      # output id → that model's row, -1 where it lacks the token

`source: base` keeps the base's tokenizer (without tokens past its embedding); a model keeps
that model's; `union` starts from the base and appends every other input's tokens it lacks:
first the ordinary tokens (as normalized, non-special added tokens, which is what mergekit's
`add_tokens` makes of them), then the other inputs' added tokens with their own flags. The
base is the recipe's `base_model`, else the first model it names. Tokens named under `tokens:`
that the result lacks are appended last. mergekit walks each vocabulary in hash order, so its
new ids differ run to run; mergenet walks each input in id order, so they are reproducible.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merge.errors import RecipeError
from merge.tokenizer.config import UNION, TokenizerSpec
from merge.tokenizer.vocab import ModelVocab, strip_unused

# The flags `add_tokens("tok")` gives a token (transformers: not special, matched after normalization).
PLAIN_TOKEN = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False}


@dataclass(frozen=True)
class OutputVocab:
    """The merged model's vocabulary; `doc` is None when the source's tokenizer files are copied
    unchanged, else the tokenizer.json to write; `appended` lists the added tokens it gained."""

    source: Path  # whose tokenizer files the output's are based on
    vocab: dict[str, int]
    rows: int
    doc: dict[str, Any] | None
    appended: tuple[dict[str, Any], ...]
    base: Path
    base_tokens: dict[str, int]  # the base's vocabulary without tokens past its embedding

    def own_vocab(self, v: ModelVocab) -> dict[str, int]:
        """An input's vocabulary as mergekit sees it: the base's trimmed to its embedding."""
        return self.base_tokens if v.folder == self.base else v.vocab

    def permutation(self, v: ModelVocab) -> tuple[int, ...]:
        """Output token id → row of `v`'s embedding holding it, -1 where `v` lacks the token."""
        own = self.own_vocab(v)
        perm = [-1] * len(self.vocab)
        for tok, new_id in self.vocab.items():
            old = own.get(tok, -1)
            perm[new_id] = old if old < v.size else -1
        return tuple(perm)


def _next_id(vocab: dict[str, int]) -> int:
    return max(vocab.values(), default=-1) + 1


def build_vocab(spec: TokenizerSpec, base: Path, vocabs: dict[Path, ModelVocab]) -> OutputVocab:
    """`vocabs` holds every input's vocabulary (base first, then in recipe order) and the source's."""
    base_vocab = strip_unused(vocabs[base])
    start = vocabs[Path(spec.source_model)] if spec.source_model else base_vocab
    vocab = dict(start.vocab)
    new: list[dict[str, Any]] = []

    def append(content: str, flags: dict[str, Any]) -> None:
        entry = {"id": vocab.get(content, _next_id(vocab)), "content": content, **flags}
        vocab[content] = entry["id"]
        new.append(entry)

    if spec.source == UNION:
        others = [base_vocab] + [v for f, v in vocabs.items() if f != base]
        plain, added = _union_parts(others)
        for tok in plain:
            if tok not in added and tok not in base_vocab.vocab:
                append(tok, PLAIN_TOKEN)
        own = base_vocab.added_contents
        for content, entry in added.items():
            if content not in own:
                append(content, {k: v for k, v in entry.items() if k not in ("id", "content")})
    for tok in spec.tokens:
        if tok not in vocab:
            append(tok, PLAIN_TOKEN)
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise RecipeError(f"the tokenizer of {start.folder} has gaps in its token ids; it cannot index an "
                          "embedding by token (tokenizer settings need contiguous ids)")
    rows = len(vocab)
    if spec.pad_to_multiple_of and rows % spec.pad_to_multiple_of:
        rows += spec.pad_to_multiple_of - rows % spec.pad_to_multiple_of
    doc = None
    if new or start.doc is not vocabs[start.folder].doc:  # grown, or trimmed to the embedding
        doc = copy.deepcopy(start.doc)
        doc["added_tokens"] = sorted(list(doc.get("added_tokens") or []) + new, key=lambda e: e["id"])
    return OutputVocab(start.folder, vocab, rows, doc, tuple(new), base, base_vocab.vocab)


def _union_parts(vocabs: list[ModelVocab]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(ordinary tokens of all inputs in order of first appearance, added tokens by content, the
    first input's settings winning), skipping ids past each input's embedding."""
    plain: dict[str, None] = {}
    added: dict[str, dict[str, Any]] = {}
    for v in vocabs:
        own = v.added_contents
        for tok, idx in v.by_id():
            if idx < v.size and tok not in own:
                plain.setdefault(tok)
        for entry in sorted(v.added, key=lambda e: e["id"]):
            if int(entry["id"]) < v.size:
                added.setdefault(entry["content"], entry)
    return list(plain), added
