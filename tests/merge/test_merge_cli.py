"""End-to-end `mergenet merge` on the tiny Llama / Qwen2 / GPT-2 fixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

METHOD_PARAMS = {
    "linear": ({"weight": 0.6}, {"weight": 0.4}, {}),
    "task_arithmetic": ({"weight": 0.6}, {"weight": 0.4}, {}),
    "ties": ({"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": [0.3, 0.7]}, {}),
    "dare_ties": ({"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": 0.5}, {"random_seed": 1}),
    "dare_linear": ({"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": 0.5}, {}),
    "breadcrumbs": ({"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": 0.5}, {"gamma": 0.02}),
    "breadcrumbs_ties": ({"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": 0.5}, {}),
    "model_stock": ({}, {}, {}),
    "slerp": ({}, None, {"t": [0.1, 0.9]}),
}


def recipe_for(method: str, base: Path, experts: list[Path], **extra) -> dict:
    p1, p2, glob = METHOD_PARAMS[method]
    models = [{"model": str(experts[0]), "parameters": p1}]
    if p2 is not None:
        models.append({"model": str(experts[1]), "parameters": p2})
    recipe = {"merge_method": method, "base_model": str(base), "models": models, "dtype": "float32"}
    if glob:
        recipe["parameters"] = glob
    recipe.update(extra)
    return recipe


def write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def load_dir(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def generates(folder: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("12+7=", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4
    return tok.decode(out[0])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_every_method_merges_and_output_generates(arch, families, cli, tmp_path):
    base, experts = families[arch]
    base_t = load_dir(base)
    for method in METHOD_PARAMS:
        out = tmp_path / f"out-{method}"
        res = cli("merge", write(tmp_path / f"{method}.yaml", recipe_for(method, base, experts)), "-o", out, "--json")
        assert res.code == 0, res.err
        doc = json.loads(res.out)
        assert doc["out"] == str(out) and doc["tensors"] == len(base_t) and doc["device"] == "cpu"
        assert doc["bytes"] == sum(f.stat().st_size for f in out.glob("*.safetensors"))
        merged = load_dir(out)
        assert set(merged) == set(base_t)
        assert any(not torch.equal(merged[k], base_t[k]) for k in merged), method
        assert all(torch.isfinite(v).all() for v in merged.values() if v.is_floating_point())
        card = (out / "README.md").read_text()
        assert f"merge_method: {method}" in card and str(experts[0]) in card
        assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
        generates(out)


def test_linear_output_matches_hand_formula_and_dtype_sharding(families, cli, tmp_path):
    _, (e1, e2) = families["llama"]
    recipe = {"merge_method": "linear", "models": [{"model": str(e1), "parameters": {"weight": 1.0}},
                                                   {"model": str(e2), "parameters": {"weight": 3.0}}]}
    out = tmp_path / "out"
    res = cli("merge", write(tmp_path / "r.yaml", recipe), "-o", out, "--dtype", "bfloat16", "--shard-size", "30KB")
    assert res.code == 0, res.err
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 2 and set(index["weight_map"].values()) == {s.name for s in shards}
    merged, a, b = load_dir(out), load_dir(e1), load_dir(e2)
    for k, v in merged.items():
        assert v.dtype == torch.bfloat16
        assert torch.equal(v, ((a[k].float() * 1.0 + b[k].float() * 3.0) / 4.0).to(torch.bfloat16)), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    generates(out)


def test_dare_is_byte_identical_run_to_run_and_seeded(families, cli, tmp_path):
    base, experts = families["qwen2"]
    recipe = recipe_for("dare_ties", base, experts)
    outs = []
    for i, seed in enumerate([1, 1, 2]):
        recipe["parameters"] = {"random_seed": seed}
        out = tmp_path / f"out{i}"
        assert cli("merge", write(tmp_path / f"r{i}.yaml", recipe), "-o", out).code == 0
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_compute_tensors_matches_written_tensors(families, tmp_path):
    from merge.executor import compute_tensors, run_merge
    from merge.recipe import load_recipe

    base, experts = families["llama"]
    recipe = load_recipe(recipe_for("dare_linear", base, experts))
    run_merge(recipe, tmp_path / "out", device="cpu")
    written = load_dir(tmp_path / "out")
    names = ["model.layers.1.mlp.down_proj.weight", "lm_head.weight"]  # a subset, in another order
    got = compute_tensors(recipe, names)
    for n in names:
        assert torch.equal(got[n], written[n]), n


def test_executor_streams_holding_at_most_inputs_plus_two(families, tmp_path):
    from merge.executor import run_merge
    from merge.io import CENSUS, ModelReader
    from merge.recipe import load_recipe

    base, experts = families["gpt2"]
    recipe = load_recipe(recipe_for("ties", base, experts))
    result = run_merge(recipe, tmp_path / "out", device="cpu")
    assert result.n_tensors > 20
    assert CENSUS.peak >= 3  # base + 2 experts loaded
    # tensors of several tasks may be alive at once, but no more bytes than the largest task alone
    largest = max(math.prod(ModelReader(base).info(n).shape) for n in ModelReader(base).names()) * 4
    assert CENSUS.peak_bytes <= (3 + 2) * largest  # base + 2 experts, plus the output


def test_mismatched_architectures_exit_2_naming_tensor(families, cli, tmp_path):
    from node.demo.models import TinySpec, make_model

    base, (e1, _) = families["llama"]
    wide = make_model(tmp_path / "wide", arch="llama", seed=1, tokenizer_dir=base, spec=TinySpec(hidden=48))
    recipe = {"merge_method": "ties", "base_model": str(base),
              "models": [{"model": str(e1), "parameters": {"weight": 0.5}},
                         {"model": str(wide), "parameters": {"weight": 0.5}}]}
    res = cli("merge", write(tmp_path / "r.yaml", recipe), "-o", tmp_path / "out")
    assert res.code == 2
    assert "tensor model.embed_tokens.weight has shape [" in res.err and "cannot be merged" in res.err
    _, (g1, _) = families["gpt2"]
    recipe["models"][1]["model"] = str(g1)
    res = cli("merge", write(tmp_path / "r2.yaml", recipe), "-o", tmp_path / "out")
    assert res.code == 2 and "has no tensor" in res.err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # no partial output left


def test_slerp_slices_with_layer_range(families, cli, tmp_path):
    base, (e1, _) = families["llama"]
    recipe = yaml.safe_load(f"""
slices:
  - sources:
      - model: {base}
        layer_range: [0, 2]
      - model: {e1}
        layer_range: [0, 2]
merge_method: slerp
base_model: {base}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
""")
    out = tmp_path / "out"
    res = cli("merge", write(tmp_path / "r.yaml", recipe), "-o", out)
    assert res.code == 0, res.err
    merged, b, e = load_dir(out), load_dir(base), load_dir(e1)
    k0 = "model.layers.0.self_attn.q_proj.weight"  # t = 0: the base
    k1 = "model.layers.1.mlp.up_proj.weight"  # t = 0: the base (mlp gradient ends at 0)
    assert torch.equal(merged[k0], b[k0].to(torch.bfloat16))
    assert torch.equal(merged[k1], b[k1].to(torch.bfloat16))
    k2 = "model.layers.1.self_attn.q_proj.weight"  # t = 1: the other model
    assert torch.allclose(merged[k2].float(), e[k2].float(), atol=1e-2)
    generates(out)


def test_slices_change_layer_count(families, cli, tmp_path):
    base, (e1, _) = families["gpt2"]
    recipe = {"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.5},
              "slices": [pair(base, e1, [1, 2]), pair(base, e1, [0, 2])]}
    out = tmp_path / "out"
    assert cli("merge", write(tmp_path / "r.yaml", recipe), "-o", out).code == 0
    assert json.loads((out / "config.json").read_text())["n_layer"] == 3
    assert "transformer.h.2.attn.c_attn.weight" in load_dir(out)
    generates(out)


def pair(base: Path, other: Path, layer_range: list[int]) -> dict:
    return {"sources": [{"model": str(base), "layer_range": layer_range},
                        {"model": str(other), "layer_range": layer_range}]}


def _grow_vocab(src: Path, dst: Path, extra: int) -> Path:
    """A copy of `src` whose embedding and lm_head have `extra` more rows (new tokens at the end)."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    t = load_file(str(src / "model.safetensors"))
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        t[k] = torch.cat([t[k], torch.full((extra, t[k].shape[1]), 0.5)])
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["vocab_size"] += extra
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_vocabulary_mismatch_needs_tokenizer_settings(families, cli, tmp_path):
    """As in mergekit 0.1.5: embeddings of different sizes are an error naming the setting to add;
    with `tokenizer: {source: base}` rows are aligned by token (big's extra rows are no token)."""
    base, (e1, e2) = families["llama"]
    big = _grow_vocab(e1, tmp_path / "big", extra=5)
    recipe = {"merge_method": "linear", "base_model": str(base),
              "models": [{"model": str(big), "parameters": {"weight": 0.5}},
                         {"model": str(e2), "parameters": {"weight": 0.5}}]}
    res = cli("merge", write(tmp_path / "r.yaml", recipe), "-o", tmp_path / "a")
    assert res.code == 2 and "vocabularies differ" in res.err and "tokenizer: {source: base}" in res.err
    recipe["tokenizer"] = {"source": "base"}
    assert cli("merge", write(tmp_path / "r2.yaml", recipe), "-o", tmp_path / "b").code == 0
    b2, bb = load_dir(e2), load_dir(big)
    rows = b2["lm_head.weight"].shape[0]
    m = load_dir(tmp_path / "b")["lm_head.weight"]
    assert m.shape[0] == rows  # the base tokenizer's vocabulary
    assert torch.allclose(m, (bb["lm_head.weight"][:rows] + b2["lm_head.weight"]) / 2)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["vocab_size"] == rows


def test_refuses_non_empty_output_and_unknown_cuda(families, cli, tmp_path):
    base, experts = families["llama"]
    path = write(tmp_path / "r.yaml", recipe_for("ties", base, experts))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    res = cli("merge", path, "-o", tmp_path / "busy")
    assert res.code == 2 and "not empty" in res.err
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert cli("merge", path, "-o", tmp_path / "empty").code == 0  # an empty folder is fine
    if not torch.cuda.is_available():
        res = cli("merge", path, "-o", tmp_path / "gpu", "--device", "cuda")
        assert res.code == 2 and "no CUDA GPU" in res.err


def test_auto_device_selection():
    from merge.device import pick_device

    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"


def test_merge_tensor_leaves_caller_tensors_untouched(families):
    from merge.executor import merge_tensor
    from merge.io import ModelReader
    from merge.plan import plan_merge
    from merge.recipe import load_recipe

    base, experts = families["llama"]
    plan = plan_merge(load_recipe(recipe_for("ties", base, experts)))
    task = plan.task("model.layers.0.mlp.up_proj.weight")
    readers = {m: ModelReader(m) for m in plan.models}
    xs = [readers[s.model].get(s.tensor) for s in task.inputs]
    b = readers[task.base.model].get(task.base.tensor)
    copies = [x.clone() for x in xs]
    first = merge_tensor(task, xs, b, method=plan.method)
    again = merge_tensor(task, xs, b, method=plan.method)  # re-merge from the same loaded tensors
    assert torch.equal(first, again)
    assert all(torch.equal(x, c) for x, c in zip(xs, copies, strict=True))


def test_scalar_and_integer_tensors(tmp_path):
    """0-d tensors merge like any other; integer buffers are copied from the first input, not averaged."""
    from safetensors.torch import save_file

    from merge.executor import run_merge
    from merge.recipe import load_recipe

    models = []
    for i, v in enumerate([1.0, 3.0]):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        save_file({"scale": torch.tensor(v), "w": torch.full((2, 2), v), "ids": torch.arange(4) + i},
                  str(folder / "model.safetensors"))
        (folder / "config.json").write_text("{}")
        models.append({"model": str(folder), "parameters": {"weight": 1.0}})
    run_merge(load_recipe({"merge_method": "linear", "models": models}), tmp_path / "out", device="cpu")
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert out["scale"].item() == 2.0 and out["scale"].dim() == 0
    assert torch.equal(out["w"], torch.full((2, 2), 2.0))
    assert torch.equal(out["ids"], torch.arange(4)) and out["ids"].dtype == torch.int64


def test_passthrough_frankenmerge(families, cli, tmp_path):
    base, (e1, _) = families["qwen2"]
    recipe = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(base), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(e1), "layer_range": [1, 2], "parameters": {"scale": 0.5}}]}]}
    out = tmp_path / "out"
    res = cli("merge", write(tmp_path / "r.yaml", recipe), "-o", out)
    assert res.code == 0, res.err
    merged, b, e = load_dir(out), load_dir(base), load_dir(e1)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
    k = "model.layers.{}.mlp.up_proj.weight"
    assert torch.equal(merged[k.format(1)], b[k.format(1)])
    assert torch.equal(merged[k.format(2)], e[k.format(1)] * 0.5)
    assert torch.equal(merged["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], e["lm_head.weight"] * 0.5)  # post weights: the last slice
    generates(out)
    recipe["slices"][0]["sources"].append({"model": str(e1), "layer_range": [0, 2]})
    res = cli("merge", write(tmp_path / "r2.yaml", recipe), "-o", tmp_path / "out2")
    assert res.code == 2 and "passthrough needs exactly 1 input model" in res.err


def test_model_card_names_exact_input_bytes(families, cli, model_copy, tmp_path):
    """A signed folder is recorded by its verified model id, an unsigned one by its weight digests."""
    import hashlib

    base, _ = families["llama"]
    signed, unsigned = model_copy("llama", 1), model_copy("llama", 2)
    model_id = json.loads(cli("submit", signed, "--json").out)["id"]
    write(tmp_path / "r.yaml", recipe_for("task_arithmetic", base, [signed, unsigned]))
    assert cli("merge", tmp_path / "r.yaml", "-o", tmp_path / "out").code == 0
    card = (tmp_path / "out" / "README.md").read_text()
    digest = hashlib.sha256((unsigned / "model.safetensors").read_bytes()).hexdigest()
    assert f"`{signed}`: `{model_id}`" in card
    assert f"model.safetensors sha256:{digest}" in card
