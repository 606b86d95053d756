"""Everything of a merged folder but the tensor data, as bytes: config, generation config,
tokenizer files, the model card and the safetensors layout (each shard's header, the index).

    files = config_files(plan, "bfloat16")           # what run_merge writes beside the weights
    spec = expected_folder(recipe, card_recipe=as_written, inputs=ids, device="cpu", version="0.3.0")
    spec.files["config.json"], spec.layout.header(0), spec.tensors

`run_merge` writes exactly these bytes, so whoever holds the recipe and its inputs can compute
them (reading tensor headers only, never tensor data) and demand byte equality of every file: a
verifier checks the whole folder this way and recomputes only a sample of tensors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from merge.card import model_card
from merge.errors import RecipeError
from merge.io import DTYPES, INDEX_FILE, ModelReader
from merge.plan import MergePlan, TensorTask, plan_merge
from merge.recipe import DTYPES as RECIPE_DTYPES
from merge.recipe import Recipe
from merge.tokenizer.files import tokenizer_files
from merge.writer import DEFAULT_SHARD_SIZE, ShardLayout

log = logging.getLogger(__name__)

CONFIG_FILES = ("config.json", "generation_config.json")
CARD_FILE = "README.md"
# Keys by which transformers loads code named by the folder (or by another hub repo). A merged
# folder ships no code, so such a key would point at modules it lacks, or at a stranger's: dropped.
CODE_KEYS = ("auto_map",)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class FolderSpec:
    """What `run_merge` writes for a recipe: every non-weight file's bytes (the index among them
    when sharded) and the weight layout (shard files, their headers, sizes and tensors)."""

    files: Mapping[str, bytes]
    layout: ShardLayout

    @property
    def tensors(self) -> list[str]:
        return [e.name for shard in self.layout.shards for e in shard]

    def weight_files(self) -> dict[str, tuple[bytes, int]]:
        """Shard file name → (its exact safetensors header, its size in bytes)."""
        return {name: (self.layout.header(i), self.layout.file_size(i)) for i, name in enumerate(self.layout.files)}


def requested_dtype(recipe: Recipe, out_dtype: str | None) -> str | None:
    """The output dtype name: `out_dtype` (a recipe dtype spelling), else the recipe's, else None
    (each tensor keeps its input dtype)."""
    if out_dtype is not None and out_dtype not in RECIPE_DTYPES:
        raise RecipeError(f"output dtype {out_dtype!r} is not one of {', '.join(sorted(RECIPE_DTYPES))}")
    return RECIPE_DTYPES[out_dtype] if out_dtype else (recipe.out_dtype or recipe.dtype)


def tensor_dtype(task: TensorTask, requested: str | None) -> torch.dtype:
    if not task.mergeable or requested is None:
        return DTYPES[task.dtype]
    return getattr(torch, requested)


def tensor_layout(plan: MergePlan, requested: str | None) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of every output tensor, in the order they are written."""
    return [(t.name, t.shape, tensor_dtype(t, requested)) for t in plan.tasks]


def _without_code(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in CODE_KEYS}


def config_files(plan: MergePlan, out_dtype: str | None, copy_tokenizer: bool = True) -> dict[str, bytes]:
    """config.json (layer count, vocabulary and dtype of the output), generation_config.json and
    the tokenizer files: the plan's tokenizer model's, grown to the output vocabulary and given
    the chat template when the recipe asks (merge.tokenizer.files). `copy_tokenizer=False`
    (mergekit's --no-copy-tokenizer) leaves the tokenizer out unless the recipe builds one."""
    files: dict[str, bytes] = {}
    src = Path(plan.config_model)
    if (src / "generation_config.json").is_file():
        files["generation_config.json"] = (src / "generation_config.json").read_bytes()
    if (src / "config.json").is_file():
        files["config.json"] = _config(plan, json.loads((src / "config.json").read_text()), out_dtype)
    if not copy_tokenizer and plan.vocab is None:
        if plan.chat_template:
            log.warning("chat_template is not written: --no-copy-tokenizer leaves the tokenizer out")
        return files
    files.update(output_tokenizer_files(plan))
    return files


def output_tokenizer_files(plan: MergePlan) -> dict[str, bytes]:
    """The tokenizer files of the output: the plan's tokenizer model's, grown to the output
    vocabulary and given the chat template when the recipe asks, without code references."""
    files = tokenizer_files(Path(plan.tokenizer_model), plan.vocab, plan.chat_template)
    if "tokenizer_config.json" in files:
        doc = json.loads(files["tokenizer_config.json"])
        if isinstance(doc, dict) and any(k in doc for k in CODE_KEYS):  # else the bytes stay as published
            files["tokenizer_config.json"] = (json.dumps(_without_code(doc), indent=2, ensure_ascii=False)
                                              + "\n").encode()
    return files


def _config(plan: MergePlan, cfg: dict, out_dtype: str | None) -> bytes:
    cfg = _without_code(cfg)
    n_in = next((cfg[k] for k in LAYER_KEYS if isinstance(cfg.get(k), int)), None)
    if n_in is not None and list(plan.layer_sources) != list(range(n_in)):
        # per-layer settings (e.g. Qwen2's layer_types) follow the layers they describe
        for key, value in list(cfg.items()):
            if isinstance(value, list) and len(value) == n_in:
                cfg[key] = [value[i] for i in plan.layer_sources]
    for key in LAYER_KEYS:
        if isinstance(cfg.get(key), int):
            cfg[key] = plan.n_layers
    if plan.vocab_rows is not None and "vocab_size" in cfg:
        cfg["vocab_size"] = plan.vocab_rows
    if out_dtype:
        cfg["torch_dtype"] = out_dtype
        if "dtype" in cfg:
            cfg["dtype"] = out_dtype
    return (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()


def card_bytes(recipe: Recipe, inputs: Mapping[str, str] | None, device: str, version: str,
               license: str | None = None) -> bytes:
    return model_card(recipe, inputs, device=device, version=version, license=license).encode("utf-8")


def expected_folder(recipe: Recipe, *, out_dtype: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                    card_recipe: Recipe | None = None, inputs: Mapping[str, str] | None = None, device: str = "",
                    version: str = "", license: str | None = None, copy_tokenizer: bool = True) -> FolderSpec:
    """What `run_merge(recipe, …)` with these arguments writes, run on `device` by mergenet
    `version`; `recipe` names local folders (as given to run_merge), `card_recipe` the recipe as
    written for the card."""
    requested = requested_dtype(recipe, out_dtype)
    readers: dict[str, ModelReader] = {}
    try:
        plan = plan_merge(recipe, readers)
        layout = ShardLayout.of(tensor_layout(plan, requested), shard_size)
        files = config_files(plan, requested, copy_tokenizer)
    finally:
        for r in readers.values():
            r.close()
    files[CARD_FILE] = card_bytes(card_recipe or recipe, inputs, device, version, license)
    index = layout.index_json()
    if index is not None:
        files[INDEX_FILE] = index
    return FolderSpec(files, layout)
