"""`mergenet merge` end to end for the mergekit 0.1.5 methods added after the first set (DELLA,
SCE, Karcher, NuSLERP / Multi-SLERP, NearSwap, Arcee Fusion, RAM): one recipe per method
through the CLI and the streaming executor, per-tensor seeding of the randomized ones, and the
search space they expose."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from merge.methods import METHODS
from tests.merge.test_merge_cli import generates, load_dir, write

# method → (arch, expert-1 parameters, expert-2 parameters or None for one expert, global parameters,
#           the role of the recipe's base_model: "origin" of task vectors, one more "input", or None: no base)
CASES = {
    "della": ("llama", {"weight": 0.6, "density": [0.3, 0.7], "epsilon": 0.1}, {"weight": 0.4, "density": 0.5},
              {"random_seed": 3}, "origin"),
    "della_linear": ("qwen2", {"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": 0.4, "epsilon": 0.2},
                     {"paper_rescale": True}, "origin"),
    "sce": ("gpt2", {}, {}, {"select_topk": [0.2, 0.8], "int8_mask": True}, "origin"),
    "karcher": ("llama", {}, {}, {"max_iter": 5}, "input"),
    "nuslerp": ("qwen2", {"weight": 0.3}, {"weight": [0.9, 0.1]}, {}, None),
    "multislerp": ("gpt2", {"weight": 0.5}, {"weight": 0.2}, {"normalize_weights": True}, "origin"),
    "nearswap": ("llama", {}, None, {"t": [0.001, 0.05]}, "origin"),
    "arcee_fusion": ("qwen2", {}, None, {}, "origin"),
    "ram": ("gpt2", {}, {}, {"epsilon": 1e-4}, "origin"),
    "ramplus_tl": ("llama", {}, {}, {"r": 0.2, "alpha": 0.5}, "origin"),
}
LAYER_TENSOR = {"llama": "model.layers.1.mlp.up_proj.weight", "qwen2": "model.layers.1.self_attn.q_proj.weight",
                "gpt2": "transformer.h.1.mlp.c_fc.weight"}


def recipe_for(method: str, base: Path, experts: list[Path]) -> dict:
    _, p1, p2, glob, role = copy.deepcopy(CASES[method])
    models = [{"model": str(experts[0]), "parameters": p1}]
    if p2 is not None:
        models.append({"model": str(experts[1]), "parameters": p2})
    recipe = {"merge_method": method, "models": models, "dtype": "float32"}
    if role:
        recipe["base_model"] = str(base)
    if glob:
        recipe["parameters"] = glob
    return recipe


@pytest.mark.parametrize("method", list(CASES))
def test_method_merges_through_cli_and_output_generates(method, families, cli, tmp_path):
    from merge.executor import tensor_generator
    from merge.plan import plan_merge
    from merge.recipe import load_recipe

    arch, *_, role = CASES[method]
    base, experts = families[arch]
    recipe = recipe_for(method, base, experts)
    out = tmp_path / "out"
    res = cli("merge", write(tmp_path / "r.yaml", recipe), "-o", out, "--json")
    assert res.code == 0, res.err
    merged, base_t = load_dir(out), load_dir(base)
    assert json.loads(res.out)["tensors"] == len(base_t) and set(merged) == set(base_t)
    assert any(not torch.equal(merged[k], base_t[k]) for k in merged)
    assert all(torch.isfinite(v).all() for v in merged.values() if v.is_floating_point())
    # one layer tensor recomputed by calling the method directly with hand-resolved parameters
    # (gradients at layer 1 of 2 take their last value): the CLI, planner and executor add nothing
    name = LAYER_TENSOR[arch]
    task = plan_merge(load_recipe(recipe)).task(name)
    inputs = [load_dir(e)[name] for e in experts[:len(recipe["models"])]]
    if role == "input":  # karcher: the base is merged as one more input, as mergekit does
        inputs.append(base_t[name])
    assert len(task.inputs) == len(inputs) and (task.base is not None) == (role == "origin")
    spec = METHODS[method]
    last = {k: v[-1] if isinstance(v, list) else v for k, v in recipe.get("parameters", {}).items()}
    gp = {p.name: last.get(p.name, p.default) for p in spec.params if not p.per_model}
    mp = [{p.name: (m["parameters"].get(p.name, p.default) if not isinstance(m["parameters"].get(p.name), list)
                    else m["parameters"][p.name][-1]) for p in spec.params if p.per_model} for m in recipe["models"]]
    gen = tensor_generator(last.get("random_seed", 0), name) if spec.randomized else None
    want = spec.fn([t.float().clone() for t in inputs], base_t[name].float() if role == "origin" else None, mp, gp, gen)
    assert torch.equal(merged[name], want.to(merged[name].dtype)), name
    generates(out)


@pytest.mark.parametrize("method", ["della", "della_linear", "dare_ties"])
def test_randomized_tensor_computed_alone_equals_the_whole_merge(method, families, tmp_path):
    """Masks are drawn from a generator seeded by (random_seed, tensor name): a verifier that
    recomputes one tensor alone gets the bytes the executor wrote in the whole-model merge."""
    from merge.executor import compute_tensors, run_merge
    from merge.recipe import load_recipe

    base, experts = families["llama"]
    raw = recipe_for("della", base, experts)
    raw["merge_method"] = method
    if method == "dare_ties":
        raw["models"][0]["parameters"].pop("epsilon")  # DARE has no epsilon
    recipe = load_recipe(raw)
    run_merge(recipe, tmp_path / "out", device="cpu")
    written = load_dir(tmp_path / "out")
    for name in ["model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.k_proj.weight"]:
        alone = compute_tensors(recipe, [name])[name]
        assert torch.equal(alone, written[name]), name
    reseeded = load_recipe({**raw, "parameters": {"random_seed": 4}})
    other = compute_tensors(reseeded, ["model.layers.1.mlp.down_proj.weight"])
    assert not torch.equal(other["model.layers.1.mlp.down_proj.weight"], written["model.layers.1.mlp.down_proj.weight"])


def test_optional_base_and_input_counts(families, cli, tmp_path):
    """nuslerp takes exactly two models; a named base is the origin, not a third input."""
    from merge.plan import plan_merge
    from merge.recipe import load_recipe

    base, (e1, e2) = families["llama"]
    raw = {"merge_method": "nuslerp", "base_model": str(base),
           "models": [{"model": str(e1), "parameters": {"weight": 0.5}},
                      {"model": str(e2), "parameters": {"weight": 0.5}}]}
    task = plan_merge(load_recipe(raw)).task("model.layers.0.mlp.up_proj.weight")
    assert task.base.model == str(base) and [s.model for s in task.inputs] == [str(e1), str(e2)]
    raw["models"] = raw["models"][:1]
    res = cli("merge", write(tmp_path / "r.yaml", raw), "-o", tmp_path / "out")
    assert res.code == 2 and "nuslerp needs exactly 2 input model(s) besides the base model, got 1" in res.err
    nearswap = {**raw, "merge_method": "nearswap", "models": [{"model": str(e1)}]}
    res = cli("merge", write(tmp_path / "r2.yaml", nearswap), "-o", tmp_path / "out")
    assert res.code == 2 and "needs parameter 't'" in res.err


def test_search_space_of_new_methods(families):
    """Per-model weight/density of the new methods are genes; methods without a per-model weight
    are refused with the reason."""
    from merge.errors import RecipeError
    from merge.recipe import load_recipe
    from merge.search.genome import SearchSpace

    base, (e1, e2) = families["llama"]
    for method, params in [("della", {"weight", "density"}), ("della_linear", {"weight", "density"}),
                           ("nuslerp", {"weight"}), ("multislerp", {"weight"})]:
        recipe = load_recipe({"merge_method": method, "base_model": str(base),
                              "models": [{"model": str(base)}, {"model": str(e1), "parameters": {"weight": 0.5}},
                                         {"model": str(e2), "parameters": {"weight": 0.5}}][1 if method == "nuslerp"
                                                                                           else 0:]})
        space = SearchSpace.from_recipe(recipe, n_layers=2)
        assert {g.param for g in space.genes} == params, method
        assert {g.model for g in space.genes} == {str(e1), str(e2)}, method  # never the base
        merged = space.to_recipe(space.start())
        assert merged.merge_method == method
    for method in ("sce", "karcher", "ram"):
        recipe = load_recipe({"merge_method": method, "base_model": str(base),
                              "models": [{"model": str(e1)}, {"model": str(e2)}]})
        with pytest.raises(RecipeError, match="no per-model weight"):
            SearchSpace.from_recipe(recipe, n_layers=2)
