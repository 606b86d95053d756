"""One input's vocabulary, read from its tokenizer files: what mergekit gets from `get_vocab()`.

    vocab = load_vocab(Path("experts/math"))   # ModelVocab: token → id, added tokens, rows
    base = strip_unused(vocab)                  # without tokens past the embedding (mergekit's base)

The source is the folder's `tokenizer.json` (the fast tokenizer every current Hub model ships);
a folder with only slow-tokenizer files is converted by transformers once, in memory. The
vocabulary is the model's (BPE, WordPiece, WordLevel or Unigram) plus the added tokens; `size`
is the embedding's row count as config.json declares it (`vocab_size`), else the token count.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merge.errors import MergeInputError

TOKENIZER_JSON = "tokenizer.json"


@dataclass(frozen=True)
class ModelVocab:
    """A tokenizer's vocabulary. `doc` is its parsed tokenizer.json (read-only)."""

    folder: Path
    doc: dict[str, Any]
    vocab: dict[str, int]  # token → id, added tokens included
    added: tuple[dict[str, Any], ...]  # tokenizer.json `added_tokens` entries (id, content, flags)
    size: int  # embedding rows

    @property
    def added_contents(self) -> set[str]:
        return {e["content"] for e in self.added}

    def by_id(self) -> list[tuple[str, int]]:
        """(token, id) in id order: the deterministic order mergenet walks a vocabulary in."""
        return sorted(self.vocab.items(), key=lambda kv: kv[1])


def tokenizer_doc(folder: Path) -> dict[str, Any]:
    """The folder's tokenizer.json, or the fast tokenizer transformers converts its files into."""
    path = folder / TOKENIZER_JSON
    try:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"cannot read {path}: {exc}") from exc
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        return json.loads(tok.backend_tokenizer.to_str())
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise MergeInputError(f"model {folder} has no {TOKENIZER_JSON} and its tokenizer cannot be read as a "
                              f"fast tokenizer ({exc}); the tokenizer settings of the recipe need one") from exc


def model_vocab(doc: dict[str, Any], where: Path) -> dict[str, int]:
    """token → id of the tokenizer model alone (no added tokens)."""
    vocab = (doc.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        return {str(t): int(i) for t, i in vocab.items()}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...] in id order
        return {str(entry[0]): i for i, entry in enumerate(vocab)}
    raise MergeInputError(f"{where / TOKENIZER_JSON}: no model vocabulary found")


def load_vocab(folder: Path | str) -> ModelVocab:
    folder = Path(folder)
    doc = tokenizer_doc(folder)
    vocab = model_vocab(doc, folder)
    added = tuple(e for e in doc.get("added_tokens") or [] if isinstance(e, dict) and "content" in e and "id" in e)
    vocab.update({e["content"]: int(e["id"]) for e in added})
    return ModelVocab(folder, doc, vocab, added, _rows(folder) or len(vocab))


def _rows(folder: Path) -> int | None:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    size = cfg.get("vocab_size") if isinstance(cfg, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def strip_unused(v: ModelVocab) -> ModelVocab:
    """The vocabulary without tokens whose id is past the embedding (mergekit's
    `get_stripped_tokenizer`, applied to the base): removed from the BPE vocabulary, the added
    tokens and every merge that uses them."""
    unused = {t for t, i in v.vocab.items() if i >= v.size}
    if not unused:
        return v
    model = v.doc.get("model") or {}
    if model.get("type") != "BPE":
        raise MergeInputError(f"{v.folder}: its tokenizer has {len(unused)} token(s) past the embedding's "
                              f"{v.size} rows and is of type {model.get('type')!r}; only BPE tokenizers can be "
                              "trimmed to their embedding")
    doc = copy.deepcopy(v.doc)
    doc["added_tokens"] = [e for e in doc.get("added_tokens") or [] if int(e["id"]) < v.size]
    doc["model"]["vocab"] = {t: i for t, i in doc["model"]["vocab"].items() if t not in unused}

    def keep(merge: Any) -> bool:
        parts = merge.split(" ") if isinstance(merge, str) else merge
        return not any(p in unused for p in parts)

    doc["model"]["merges"] = [m for m in doc["model"].get("merges") or [] if keep(m)]
    added = tuple(e for e in v.added if int(e["id"]) < v.size)
    vocab = {t: i for t, i in v.vocab.items() if t not in unused}
    return ModelVocab(v.folder, doc, vocab, added, v.size)
