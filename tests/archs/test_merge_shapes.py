"""`mergenet submit` + `mergenet merge` on every real-shaped architecture: registry ids in the
recipe, four methods, the output loads with AutoModelForCausalLM and still answers; tied models
keep having no lm_head tensor; layer slicing moves fused-qkv and Conv1D layers whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from merge.plan import split_layer
from tests.archs.fixtures import ARCHS, TIED

METHODS = {
    "linear": lambda b, e1, e2: {"models": [{"model": e1, "parameters": {"weight": 0.6}},
                                            {"model": e2, "parameters": {"weight": 0.4}}]},
    "ties": lambda b, e1, e2: {"base_model": b, "parameters": {"density": 0.5},
                               "models": [{"model": e1, "parameters": {"weight": 0.5}},
                                          {"model": e2, "parameters": {"weight": 0.5}}]},
    "dare_ties": lambda b, e1, e2: {"base_model": b, "parameters": {"density": 0.5, "random_seed": 5},
                                    "models": [{"model": e1, "parameters": {"weight": 0.5}},
                                               {"model": e2, "parameters": {"weight": 0.5}}]},
    "slerp": lambda b, e1, e2: {"base_model": e1, "parameters": {"t": [0.2, 0.8]},
                                "slices": [{"sources": [{"model": e1, "layer_range": [0, 2]},
                                                        {"model": e2, "layer_range": [0, 2]}]}]},
}


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def load_and_answer(folder: Path) -> str:
    """Load with plain transformers, as a puller would, and greedily answer one memorized fact."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("12+7=", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_submitted_models_merge_with_every_method(arch, cli, shaped_copy, tmp_path):
    ids = []
    for index in (0, 1, 2):
        res = cli("submit", shaped_copy(arch, index), "--json")
        assert res.code == 0, res.err
        ids.append(json.loads(res.out)["id"])
    base_dir = shaped_copy(arch, 0)
    base = tensors(base_dir)
    assert any("lm_head" in n or "embed_out" in n for n in base) == (arch not in TIED)
    for method, make in METHODS.items():
        recipe = {"merge_method": method, "dtype": "float32", **make(*ids)}
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        out = tmp_path / f"out-{method}"
        res = cli("merge", path, "-o", out, "--json", "--device", "cpu")
        assert res.code == 0, f"{method}: {res.err}"
        merged = tensors(out)
        assert set(merged) == set(base), method  # a tied model gains no lm_head, an untied one keeps it
        assert all(merged[k].shape == base[k].shape for k in base)
        assert any(not torch.equal(merged[k], base[k]) for k in base), method
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["vocab_size"] == json.loads((base_dir / "config.json").read_text())["vocab_size"]
        assert load_and_answer(out).strip().startswith("19"), method  # small deltas keep the memorized answer


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_slices_move_whole_layers(arch, shaped, tmp_path):
    """passthrough of layers [0,1) of expert1, [1,2) of expert2, [1,2) of expert1: three layers,
    each a byte copy of its source layer (fused qkv and Conv1D included), embeddings from the first
    slice, head and final norm from the last."""
    from merge.executor import run_merge
    from merge.recipe import load_recipe

    _, (e1, e2) = shaped[arch]
    recipe = load_recipe({"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(e1), "layer_range": [0, 1]}]},
        {"sources": [{"model": str(e2), "layer_range": [1, 2]}]},
        {"sources": [{"model": str(e1), "layer_range": [1, 2]}]},
    ]})
    out = run_merge(recipe, tmp_path / "sliced", device="cpu").out_dir
    merged, one, two = tensors(out), tensors(e1), tensors(e2)
    source_of = {0: (one, 0), 1: (two, 1), 2: (one, 1)}
    for name, t in merged.items():
        parts = split_layer(name)
        if parts is None:
            assert torch.equal(t, one[name]), name
            continue
        prefix, layer, rest = parts
        src, src_layer = source_of[layer]
        assert torch.equal(t, src[f"{prefix}.{src_layer}.{rest}"]), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg.get("num_hidden_layers", cfg.get("n_layer")) == 3
    if "layer_types" in cfg:  # Gemma2 / Qwen2 describe each layer: the list follows the layers
        assert len(cfg["layer_types"]) == 3
    load_and_answer(out)  # loads with nothing missing and generates
