"""Fingerprints that decide which models can be merged weight-by-weight.

    arch = architecture_fingerprint("llama", {"model.safetensors": info})
    tok = tokenizer_fingerprint(folder)  # None when the folder has no tokenizer

Two models share an architecture fingerprint when model_type and every tensor's name, dtype
and shape agree (shards may be split differently). Two tokenizers share a fingerprint when
they map the same strings to the same ids the same way (vocabulary, merges, added tokens),
independent of how their JSON was formatted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from registry.errors import BadModelError
from registry.safetensors_check import SafetensorsInfo


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def architecture_fingerprint(model_type: str, infos: Mapping[str, SafetensorsInfo]) -> str:
    """Hash of model_type plus sorted (tensor name, dtype, shape) over all shards."""
    tensors: dict[str, list[Any]] = {}
    for file, info in infos.items():
        for name, t in info.tensors.items():
            if name in tensors:
                raise BadModelError(f"{file}: tensor {name!r} also appears in another shard")
            tensors[name] = [t.dtype, list(t.shape)]
    return _digest({"model_type": model_type, "tensors": sorted([n, *v] for n, v in tensors.items())})


def tokenizer_fingerprint(root: Path) -> str | None:
    """From tokenizer.json (model vocab/merges + added tokens), else vocab.json + merges.txt,
    else the raw bytes of a sentencepiece tokenizer.model; None when none exists."""
    tj = root / "tokenizer.json"
    if tj.is_file():
        try:
            doc = json.loads(tj.read_text(encoding="utf-8"))
            model = doc["model"]
            merges = model.get("merges")
            # merges are "a b" strings in older files and ["a", "b"] pairs in newer ones
            merges = [m.split(" ", 1) if isinstance(m, str) else m for m in merges] if merges else None
            added = sorted((t["id"], t["content"]) for t in doc.get("added_tokens") or [])
            return _digest({"type": model.get("type"), "vocab": model.get("vocab"), "merges": merges,
                            "added": added})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadModelError(f"tokenizer.json in {root} is not a valid tokenizers file: {exc}") from None
    vocab, merges_txt = root / "vocab.json", root / "merges.txt"
    if vocab.is_file():
        try:
            vocab_doc = json.loads(vocab.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadModelError(f"vocab.json in {root} does not parse as JSON: {exc}") from None
        merge_lines = merges_txt.read_text(encoding="utf-8").split("\n") if merges_txt.is_file() else []
        merge_pairs = [m.split(" ", 1) for m in merge_lines if m and not m.startswith("#version")]
        return _digest({"type": "BPE", "vocab": vocab_doc, "merges": merge_pairs or None, "added": []})
    sp = root / "tokenizer.model"
    if sp.is_file():
        return "sha256:" + hashlib.sha256(sp.read_bytes()).hexdigest()
    return None
