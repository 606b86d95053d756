"""Recipes a user (or a hostile plan) can hand the engine that must be refused as bad input:
non-finite weights, binary files, an output path under a regular file."""

from __future__ import annotations

import pytest
import yaml

from merge.errors import RecipeError
from merge.recipe import load_recipe


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), "nan", "-inf", [0.5, float("nan")]])
def test_non_finite_weights_are_recipe_errors(families, cli, tmp_path, weight):
    from merge.plan import plan_merge

    _, (e1, e2) = families["llama"]
    recipe = {"merge_method": "linear", "models": [{"model": str(e1), "parameters": {"weight": weight}},
                                                   {"model": str(e2), "parameters": {"weight": 1.0}}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="finite"):
        plan_merge(load_recipe(path))
    res = cli("merge", path, "-o", tmp_path / "out")
    assert res.code == 2 and "finite" in res.err and not (tmp_path / "out").exists()


def test_binary_recipe_is_bad_input_naming_the_file(cli, tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(128, 256)) * 3)
    for args in (("merge", path, "-o", tmp_path / "o"), ("fuse", path, "-o", tmp_path / "o")):
        res = cli(*args)
        assert res.code == 2 and "garbage.yaml" in res.err and "UTF-8" in res.err, res.err


def test_output_under_a_regular_file_is_bad_input(families, cli, tmp_path):
    base, (e1, _) = families["llama"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(base), "parameters": {"weight": 0.5}}, {"model": str(e1), "parameters": {"weight": 0.5}}]}))
    (tmp_path / "afile").write_text("x")
    res = cli("merge", path, "-o", tmp_path / "afile" / "sub")
    assert res.code == 2 and "is a file" in res.err
