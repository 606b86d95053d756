"""Per-tensor parameter resolution: gradients over layers, filters, scope precedence."""

from __future__ import annotations

import pytest

from merge.errors import IncompatibleModelsError, RecipeError
from merge.params import gradient, lookup, setting_value
from merge.plan import plan_merge
from merge.recipe import load_recipe


def test_gradient_is_piecewise_linear_over_layers():
    assert gradient([0.0, 1.0], 0.5) == 0.5
    assert gradient([0.0, 0.5, 1.0], 0.25) == 0.25
    assert gradient([1.0, 0.0, 1.0], 0.5) == 0.0
    assert gradient([1.0, 0.0, 1.0], 0.75) == 0.5
    assert gradient([0.2, 0.4, 0.6, 0.8], 1.0) == 0.8
    assert gradient([3.0], 0.7) == 3.0


def test_evaluate_filters_and_discrete_lists():
    setting = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.9}, {"value": 0.1}]
    assert setting_value(setting, "model.layers.1.self_attn.q_proj.weight", 0.25) == 0.25
    assert setting_value(setting, "model.layers.1.mlp.up_proj.weight", 0.25) == 0.9
    assert setting_value(setting, "model.norm.weight", 0.25) == 0.1
    assert setting_value([{"filter": "mlp", "value": 1}], "model.norm.weight", 0) is None
    assert setting_value([{"filter": "*", "value": 2}], "anything", 0) == 2
    assert setting_value([True, False], "x", 0.4) is True and setting_value([True, False], "x", 1.0) is False


def test_scope_precedence_and_fall_through():
    model = {"weight": [{"filter": "mlp", "value": 0.9}]}
    glob = {"weight": 0.3}
    assert lookup("weight", [model, None, glob], "model.layers.0.mlp.up_proj.weight", 0) == 0.9
    assert lookup("weight", [model, None, glob], "model.layers.0.self_attn.q_proj.weight", 0) == 0.3
    assert lookup("density", [model, glob], "x", 0) is None


def test_plan_resolves_layer_wise_parameters(families):
    base, (e1, e2) = families["llama"]
    recipe = load_recipe({
        "merge_method": "ties", "base_model": str(base),
        "models": [{"model": str(e1),
                    "parameters": {"weight": [0.0, 1.0], "density": [{"filter": "mlp", "value": 0.2}]}},
                   {"model": str(e2), "parameters": {"weight": 0.5}}],
        "parameters": {"density": 0.9, "normalize": False, "lambda": [1, 3], "random_seed": 5},
    })
    plan = plan_merge(recipe)
    by_name = {t.name: t for t in plan.tasks}
    assert plan.n_layers == 2 and len(plan.tasks) == len(by_name)
    l0 = by_name["model.layers.0.mlp.up_proj.weight"]
    l1 = by_name["model.layers.1.self_attn.q_proj.weight"]
    emb = by_name["model.embed_tokens.weight"]
    assert (l0.layer, l0.t, l1.layer, l1.t) == (0, 0.0, 1, 1.0)
    assert [p["weight"] for p in l0.model_params] == [0.0, 0.5]
    assert [p["weight"] for p in l1.model_params] == [1.0, 0.5]
    assert [p["density"] for p in l0.model_params] == [0.2, 0.9]  # filter hit, else global
    assert [p["density"] for p in l1.model_params] == [0.9, 0.9]  # filter miss falls through
    assert (l0.global_params["lambda"], l1.global_params["lambda"]) == (1.0, 3.0)
    assert emb.t == 0.0 and emb.layer is None and emb.global_params["normalize"] is False
    assert l0.base.model == str(base) and [s.model for s in l0.inputs] == [str(e1), str(e2)]
    assert l0.seed == 5


def test_plan_missing_required_parameter(families):
    base, (e1, _) = families["llama"]
    recipe = load_recipe({"merge_method": "slerp", "base_model": str(base), "models": [{"model": str(e1)}]})
    with pytest.raises(RecipeError, match="slerp needs parameter 't'"):
        plan_merge(recipe)


def test_plan_wrong_input_count(families):
    base, (e1, e2) = families["llama"]
    recipe = load_recipe({"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.5},
                          "models": [{"model": str(e1)}, {"model": str(e2)}]})
    with pytest.raises(RecipeError, match="slerp needs exactly 1 input model"):
        plan_merge(recipe)


def test_plan_slices_remap_layers(families):
    base, (e1, _) = families["llama"]
    recipe = load_recipe({
        "merge_method": "slerp", "base_model": str(base), "parameters": {"t": [0.2, 0.8]},
        "slices": [{"sources": [{"model": str(m), "layer_range": [1, 2]} for m in (base, e1)]},
                   {"sources": [{"model": str(m), "layer_range": [0, 2]} for m in (base, e1)]}],
    })
    plan = plan_merge(recipe)
    assert plan.n_layers == 3
    names = {t.name: t for t in plan.tasks}
    assert names["model.layers.0.mlp.up_proj.weight"].base.tensor == "model.layers.1.mlp.up_proj.weight"
    assert names["model.layers.0.mlp.up_proj.weight"].global_params["t"] == 0.8  # one-layer slice: t = 1
    assert names["model.layers.2.mlp.up_proj.weight"].inputs[0].tensor == "model.layers.1.mlp.up_proj.weight"
    assert names["model.layers.1.mlp.up_proj.weight"].global_params["t"] == pytest.approx(0.2)


def test_plan_mismatched_architectures_names_tensor(families):
    base, _ = families["llama"]
    _, (g1, _) = families["gpt2"]
    recipe = load_recipe({"merge_method": "linear", "models": [{"model": str(base), "parameters": {"weight": 1}},
                                                               {"model": str(g1), "parameters": {"weight": 1}}]})
    with pytest.raises(IncompatibleModelsError, match=r"has no tensor lm_head\.weight"):
        plan_merge(recipe)
