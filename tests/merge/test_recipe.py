"""Recipe parsing, round-trips and the errors a user sees (exit 2, naming field and choices)."""

from __future__ import annotations

import pytest

from merge.errors import RecipeError
from merge.recipe import load_recipe

TIES = """
merge_method: ties
base_model: /m/base
models:
  - model: /m/a
    parameters: {weight: 0.5, density: [0.2, 0.8]}
  - model: /m/b
    parameters:
      weight:
        - filter: mlp
          value: 0.7
        - value: 0.3
parameters: {normalize: true, random_seed: 3}
dtype: bf16
out_dtype: float16
"""

SLERP = """
slices:
  - sources:
      - model: /m/base
        layer_range: [0, 2]
      - model: /m/a
        layer_range: [0, 2]
merge_method: slerp
base_model: /m/base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""


def test_parse_and_round_trip():
    r = load_recipe(TIES)
    assert r.merge_method == "ties" and r.base_model == "/m/base"
    assert [m.model for m in r.models] == ["/m/a", "/m/b"]
    assert r.dtype == "bfloat16" and r.out_dtype == "float16"  # aliases canonicalised
    assert load_recipe(r.to_dict()) == r
    assert load_recipe(r.to_yaml()) == r
    assert r.model_refs() == ["/m/base", "/m/a", "/m/b"]


def test_slices_with_layer_range_accepted(tmp_path):
    path = tmp_path / "slerp.yaml"
    path.write_text(SLERP)
    r = load_recipe(path)
    assert r.slices[0].sources[1].layer_range == (0, 2)
    assert load_recipe(r.to_yaml()) == r


def test_with_models_replaces_every_reference():
    r = load_recipe(SLERP).with_models({"/m/base": "/x/base", "/m/a": "/x/a"})
    assert r.base_model == "/x/base"
    assert [s.model for s in r.slices[0].sources] == ["/x/base", "/x/a"]
    assert r.model_refs() == ["/x/base", "/x/a"]
    assert load_recipe(TIES).with_models({}) == load_recipe(TIES)


@pytest.mark.parametrize("text,needle", [
    ("merge_method: nope\nmodels: [/a]\n", "supported: arcee_fusion, breadcrumbs, breadcrumbs_ties, dare_linear"),
    ("merge_method: linear\nmodels: [/a]\nbogus: 1\n", "unknown key 'bogus'; supported: merge_method"),
    ("merge_method: linear\n", "no input models"),
    ("merge_method: ties\nmodels: [/a]\n", "needs a base_model"),
    ("merge_method: linear\nmodels: [{model: /a, parameters: {wieght: 1}}]\n",
     "unknown parameter 'wieght' for linear; supported: int8_mask, normalize, random_seed, weight"),
    ("merge_method: linear\nmodels: [{model: /a, parameters: {weight: {x: 1}}}]\n", "models[0].parameters.weight"),
    ("merge_method: linear\nmodels: [/a]\ndtype: int8\n", "dtype must be one of"),
    ("merge_method: linear\nmodules: {text_decoder: {models: [/a]}}\n", "`modules:`, for multimodal models"),
    ("merge_method: slerp\nbase_model: /a\nslices: [{sources: [{model: /a, layer_range: [2, 1]}]}]\n",
     "layer_range must be [start, end)"),
    ("merge_method: linear\nmodels: [/a]\nmodels2: [/b]\n", "unknown key 'models2'"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("merge_method: [unclosed\n", "not valid YAML"),
])
def test_recipe_errors_name_the_field(text, needle):
    with pytest.raises(RecipeError, match=None) as info:
        load_recipe(text)
    assert needle in str(info.value)


def test_cli_reports_unknown_method_with_exit_2(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("merge_method: frankenstein\nmodels: [/a]\n")
    res = cli("merge", path, "-o", tmp_path / "out")
    assert res.code == 2
    assert "unknown merge_method 'frankenstein'" in res.err and "ties" in res.err and "slerp" in res.err
    assert res.err.startswith("mergenet: error:") and "Traceback" not in res.err
    assert not (tmp_path / "out").exists()


def test_cli_missing_recipe_file_is_exit_2(cli, tmp_path):
    res = cli("merge", tmp_path / "missing.yaml", "-o", tmp_path / "out")
    assert res.code == 2 and "cannot read recipe" in res.err


def test_shard_size_parsing(cli, tmp_path):
    import argparse

    from node.cli.merge_cmds import parse_size

    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1.5G") == 1_500_000_000
    assert parse_size("64MiB") == 64 * 2**20
    assert parse_size("4096") == 4096
    for bad in ("", "GB", "-1GB", "2XB", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
    res = cli("merge", tmp_path / "r.yaml", "-o", tmp_path / "out", "--shard-size", "lots")
    assert res.code == 2
