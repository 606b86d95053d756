"""Recipe and data validation: bad input is exit 2 with one line naming the file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from merge.errors import RecipeError
from merge.fusion.data import Example, file_sha256, load_examples
from merge.fusion.recipe import KEYS, load_recipe


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_recipe_defaults_and_relative_paths(tmp_path):
    path = _write(tmp_path / "r.yaml", "target: t\nsources: [a, sha256:abc]\ndata: d/train.jsonl\n")
    recipe = load_recipe(path)
    # Model references stay opaque (the caller resolves ids); the data file is a path.
    assert recipe.target == "t" and recipe.data == str(tmp_path / "d" / "train.jsonl")
    assert recipe.sources == ("a", "sha256:abc")
    assert recipe.local_path("a") == tmp_path / "a" and recipe.local_path("/abs/m") == Path("/abs/m")
    assert (recipe.top_k, recipe.fusion, recipe.lm_loss_weight, recipe.device) == (10, "min_ce", 0.9, "auto")
    assert load_recipe(recipe.to_dict()) == recipe
    assert recipe.model_refs() == ["t", "a", "sha256:abc"]
    assert recipe.with_models({"sha256:abc": "/m"}).sources == ("a", "/m")


def test_unknown_key_lists_supported_ones(tmp_path):
    path = _write(tmp_path / "r.yaml", "target: t\nsources: [a]\ndata: d\ntemperature: 2\n")
    with pytest.raises(RecipeError, match="temperature") as err:
        load_recipe(path)
    assert all(k in str(err.value) for k in KEYS)


@pytest.mark.parametrize(("extra", "field"), [
    ("fusion: max_ce", "fusion"), ("top_k: 0", "top_k"), ("lm_loss_weight: 1.5", "lm_loss_weight"),
    ("lr: 0", "lr"), ("epochs: two", "epochs"), ("device: tpu", "device"), ("batch_size: true", "batch_size"),
])
def test_bad_values_name_the_key(tmp_path, extra, field):
    path = _write(tmp_path / "r.yaml", f"target: t\nsources: [a]\ndata: d\n{extra}\n")
    with pytest.raises(RecipeError, match=f"'{field}'"):
        load_recipe(path)


def test_missing_sources_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="'sources'"):
        load_recipe(_write(tmp_path / "a.yaml", "target: t\nsources: []\ndata: d\n"))
    with pytest.raises(RecipeError, match="missing required key 'data'"):
        load_recipe(_write(tmp_path / "b.yaml", "target: t\nsources: [a]\n"))
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path / "c.yaml", "target: [\n"))


def test_data_loads_and_digest_is_stable(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"instruction": "add 1 and 2", "response": "3"}\n\n'
                                        '{"instruction": "x", "response": "y", "extra": 1}\n')
    assert load_examples(path) == (Example("add 1 and 2", "3"), Example("x", "y"))
    assert file_sha256(path) == file_sha256(path) and len(file_sha256(path)) == 64


def _cli_recipe(tmp_path: Path, world, data: Path) -> Path:
    return _write(tmp_path / "fuse.yaml", f"target: {world['target']}\nsources: [{world['src_bpe']}]\n"
                                          f"data: {data.name}\nepochs: 1\n")


def test_cli_missing_field_is_exit_2_naming_line_and_field(cli, world, tmp_path):
    data = _write(tmp_path / "train.jsonl", json.dumps({"instruction": "a", "response": "b"}) + "\n"
                  + json.dumps({"instruction": "add 1 and 2"}) + "\n")
    res = cli("fuse", _cli_recipe(tmp_path, world, data), "-o", tmp_path / "out")
    assert res.code == 2
    assert "line 2" in res.err and "'response'" in res.err and str(data) in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_mismatched_data_file_is_exit_2(cli, world, tmp_path):
    # an eval task file given where instruction data is expected
    data = _write(tmp_path / "tasks.jsonl", json.dumps({"prompt": "12+7=", "answer": "19"}) + "\n")
    res = cli("fuse", _cli_recipe(tmp_path, world, data), "-o", tmp_path / "out")
    assert res.code == 2 and "line 1" in res.err and "'instruction'" in res.err


def test_cli_not_json_and_wrong_type(cli, world, tmp_path):
    data = _write(tmp_path / "d.jsonl", "not json\n")
    res = cli("fuse", _cli_recipe(tmp_path, world, data), "-o", tmp_path / "out")
    assert res.code == 2 and "line 1" in res.err and "not valid JSON" in res.err
    data.write_text(json.dumps({"instruction": "a", "response": 5}) + "\n")
    res = cli("fuse", _cli_recipe(tmp_path, world, data), "-o", tmp_path / "out")
    assert res.code == 2 and "'response' must be a string" in res.err


def test_cli_bad_recipe_and_model_folder(cli, world, tmp_path):
    res = cli("fuse", _write(tmp_path / "r.yaml", "target: t\nsources: [a]\ndata: d\nbogus: 1\n"), "-o", tmp_path / "o")
    assert res.code == 2 and "bogus" in res.err
    data = _write(tmp_path / "d.jsonl", json.dumps({"instruction": "a", "response": "b"}) + "\n")
    (tmp_path / "empty-model").mkdir()
    res = cli("fuse", _write(tmp_path / "r2.yaml", f"target: empty-model\nsources: [{world['src_bpe']}]\n"
                                                   f"data: {data.name}\n"), "-o", tmp_path / "o")
    assert res.code == 2 and "config.json" in res.err and "empty-model" in res.err


def test_cli_refuses_non_empty_output(cli, world, tmp_path):
    data = _write(tmp_path / "d.jsonl", json.dumps({"instruction": "a", "response": "b"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = cli("fuse", _cli_recipe(tmp_path, world, data), "-o", out)
    assert res.code == 2 and "not empty" in res.err
    assert (out / "keep.txt").read_text() == "mine"


def test_empty_response_is_refused(tmp_path):
    from merge.errors import MergeInputError

    path = _write(tmp_path / "d.jsonl", json.dumps({"instruction": "a", "response": " "}) + "\n")
    with pytest.raises(MergeInputError, match="line 1: field 'response' is empty"):
        load_examples(path)


def test_truncation_keeps_the_response_and_the_latest_prompt(world):
    from merge.fusion.capture import encode_example, load_tokenizer

    tok = load_tokenizer(world["target"])
    long_prompt = Example(" ".join(["add 1 and 2"] * 40), "the sum is 3")
    response = tok("the sum is 3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    budget = 2 * len(response) + 2  # a short response: the prompt gets all it leaves
    enc = encode_example(tok, long_prompt, max_length=budget)
    assert enc.prompt_len == len(response) + 2 and list(enc.ids[enc.prompt_len:]) == response
    assert enc.n_chars == len("the sum is 3") + 1
    long_response = Example("add 1 and 2", " ".join(["the sum is 3"] * 40))
    enc = encode_example(tok, long_response, max_length=16)
    assert len(enc.ids) == 16 and enc.prompt_len == 8  # half the budget each
    assert 0 < enc.n_chars < len(long_response.response)
