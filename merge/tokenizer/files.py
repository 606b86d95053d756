"""The output's tokenizer files as bytes: the source's, grown or trimmed, with a chat template.

    files = tokenizer_files(Path("/m/base"), out_vocab, template)   # name → bytes

Called by `merge.outputs.config_files`, so `run_merge` and a verifier get the same bytes from
the same inputs. Files the vocabulary does not change are copied byte for byte. A rewritten
tokenizer.json drops the slow-tokenizer files beside it (they would describe the old
vocabulary) and, when tokenizer_config.json lists `added_tokens_decoder`, the new added tokens
join it. A chat template goes into tokenizer_config.json; a `chat_template.jinja`, which
transformers would prefer, is left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from merge.errors import MergeInputError
from merge.tokenizer.build import OutputVocab
from merge.tokenizer.chat import JINJA_FILE

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", JINJA_FILE, "vocab.txt")
SLOW_FILES = ("vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json", "vocab.txt")
CONFIG = "tokenizer_config.json"
DECODER_KEY = "added_tokens_decoder"


def json_bytes(doc: Any) -> bytes:
    """How mergenet writes a JSON file it changed (as transformers does: 2-space indent, UTF-8)."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def tokenizer_files(folder: Path, vocab: OutputVocab | None, template: str | None) -> dict[str, bytes]:
    files = {name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()}
    config: dict[str, Any] | None = None
    if vocab is not None and vocab.doc is not None:
        for name in SLOW_FILES:
            files.pop(name, None)
        files["tokenizer.json"] = json_bytes(vocab.doc)
        config = _config(files, folder)
        if isinstance(config.get(DECODER_KEY), dict):
            for e in vocab.appended:
                config[DECODER_KEY][str(e["id"])] = {k: v for k, v in e.items() if k != "id"}
    if template is not None:
        if not files:
            raise MergeInputError(f"chat_template: model {folder} has no tokenizer files to add a template to")
        config = config if config is not None else _config(files, folder)
        config["chat_template"] = template
        files.pop(JINJA_FILE, None)
    if config is not None:
        files[CONFIG] = json_bytes(config)
    return files


def _config(files: dict[str, bytes], folder: Path) -> dict[str, Any]:
    if CONFIG not in files:
        return {}
    try:
        doc = json.loads(files[CONFIG])
    except ValueError as exc:
        raise MergeInputError(f"{folder / CONFIG} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MergeInputError(f"{folder / CONFIG} must hold a JSON object")
    return doc
