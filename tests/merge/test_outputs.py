"""`merge.outputs.expected_folder` computes, without merging a tensor, exactly the files
`run_merge` writes beside the tensor data — config, tokenizer, card, shard headers and index —
and a merged folder never carries references to code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from merge.executor import run_merge
from merge.outputs import expected_folder
from merge.recipe import load_recipe


def read_header(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[:8 + int.from_bytes(raw[:8], "little")]


@pytest.mark.parametrize("shard_size", [None, 20_000])
def test_expected_folder_is_what_run_merge_writes(model_copy, tmp_path, shard_size):
    base, e1, e2 = model_copy("llama", 0), model_copy("llama", 1), model_copy("llama", 2)
    written = {"merge_method": "ties", "base_model": "base-id", "dtype": "float32", "out_dtype": "bfloat16",
               "models": [{"model": "e1-id", "parameters": {"weight": 0.5, "density": 0.5}},
                          {"model": "e2-id", "parameters": {"weight": 0.5, "density": 0.5}}]}
    card_recipe = load_recipe(written)
    recipe = card_recipe.with_models({"base-id": str(base), "e1-id": str(e1), "e2-id": str(e2)})
    inputs = {"base-id": "sha256:" + "a" * 64, "e1-id": "e1-id"}
    sizes = {"shard_size": shard_size} if shard_size else {}
    out = tmp_path / "out"
    result = run_merge(recipe, out, device="cpu", card_recipe=card_recipe, inputs=inputs, version="1.2.3", **sizes)
    spec = expected_folder(recipe, card_recipe=card_recipe, inputs=inputs, device=result.device, version="1.2.3",
                           **sizes)
    weights = spec.weight_files()
    assert sorted(p.name for p in out.iterdir()) == sorted([*spec.files, *weights])
    assert (len(weights) > 1) == bool(shard_size)
    for name, data in spec.files.items():
        assert (out / name).read_bytes() == data, name
    for name, (header, size) in weights.items():
        assert read_header(out / name) == header and (out / name).stat().st_size == size, name
    assert len(spec.tensors) == result.n_tensors
    assert expected_folder(recipe, card_recipe=card_recipe, inputs=inputs, device="cuda",
                           version="1.2.3").files["README.md"] != spec.files["README.md"]


def test_references_to_code_are_dropped_from_copied_configs(model_copy, tmp_path):
    base, e1 = model_copy("llama", 0), model_copy("llama", 1)
    for folder in (base, e1):
        for name in ("config.json", "tokenizer_config.json"):
            doc = json.loads((folder / name).read_text())
            (folder / name).write_text(json.dumps({**doc, "auto_map": {"AutoModel": "evil/repo--m.Evil"}}))
    recipe = load_recipe({"merge_method": "linear", "dtype": "float32",
                          "models": [{"model": str(base), "parameters": {"weight": 0.5}},
                                     {"model": str(e1), "parameters": {"weight": 0.5}}]})
    out = run_merge(recipe, tmp_path / "out", device="cpu").out_dir
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((out / name).read_text()), name
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"]
