"""Tokenizer settings (`tokenizer_source`, `tokenizer:`, `chat_template`) against mergekit 0.1.5
itself: its own `mergekit-yaml` command runs the same recipe on the same tiny models (offline),
and the output vocabularies, added-token flags and embedding / lm_head rows (compared by token
string: mergekit numbers new tokens in hash order) must agree within float32 rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from merge.errors import IncompatibleModelsError, RecipeError
from merge.executor import run_merge
from merge.outputs import expected_folder
from merge.recipe import load_recipe

ROWS = {"rtol": 2e-6, "atol": 1e-6}
SPECIAL = "<|im_start|>"  # a special token only model b has


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Three tiny Llamas: `a` and `base` share a tokenizer, `b` has another (more tokens, other
    merges, one added special token); `a` carries a chat template."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from node.demo.models import make_model, make_tokenizer

    root = tmp_path_factory.mktemp("tok-models")
    t1 = make_tokenizer(root / "t1", vocab_size=300, seed=0)
    t2 = make_tokenizer(root / "t2", vocab_size=340, seed=1)
    tok = AutoTokenizer.from_pretrained(str(t2))
    tok.add_tokens([AddedToken(SPECIAL, special=True, normalized=False)])
    tok.save_pretrained(str(t2))
    out = {"base": make_model(root / "base", "llama", seed=0, tokenizer_dir=t1),
           "a": make_model(root / "a", "llama", seed=1, tokenizer_dir=t1),
           "b": make_model(root / "b", "llama", seed=2, tokenizer_dir=t2)}
    cfg = json.loads((out["a"] / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (out["a"] / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def mergekit_yaml(recipe: dict, out: Path) -> Path:
    """Run mergekit's own CLI (mergekit-yaml) on `recipe`, offline."""
    path = out.parent / f"{out.name}.yml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = "import sys; from mergekit.scripts.run_yaml import main; sys.exit(main())"
    res = subprocess.run([sys.executable, "-c", code, str(path), str(out), "--no-lazy-unpickle"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def vocab(folder: Path) -> dict[str, int]:
    doc = json.loads((folder / "tokenizer.json").read_text())
    v = dict(doc["model"]["vocab"])
    v.update({e["content"]: e["id"] for e in doc["added_tokens"]})
    return v


def added_flags(folder: Path) -> dict[str, dict]:
    doc = json.loads((folder / "tokenizer.json").read_text())
    return {e["content"]: {k: x for k, x in e.items() if k != "id"} for e in doc["added_tokens"]}


def assert_same_rows(ours: Path, theirs: Path) -> None:
    """Same vocabulary, same row for each token in every vocabulary tensor, same other tensors."""
    vo, vt = vocab(ours), vocab(theirs)
    assert set(vo) == set(vt)
    assert added_flags(ours) == added_flags(theirs)
    to, tt = load_file(str(ours / "model.safetensors")), load_file(str(theirs / "model.safetensors"))
    assert set(to) == set(tt)
    tokens = sorted(vo)
    for name in to:
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert to[name].shape == tt[name].shape, name
            io, it = torch.tensor([vo[t] for t in tokens]), torch.tensor([vt[t] for t in tokens])
            torch.testing.assert_close(to[name][io], tt[name][it], **ROWS)
            torch.testing.assert_close(to[name][len(vo):], tt[name][len(vt):], **ROWS)  # padding rows
        else:
            torch.testing.assert_close(to[name], tt[name], **ROWS)
    cfg_o, cfg_t = (json.loads((f / "config.json").read_text()) for f in (ours, theirs))
    assert cfg_o["vocab_size"] == cfg_t["vocab_size"]


def recipes(m: dict[str, Path]) -> dict[str, dict]:
    linear = {"merge_method": "linear", "base_model": str(m["base"]), "dtype": "float32",
              "models": [{"model": str(m["base"]), "parameters": {"weight": 0.3}},
                         {"model": str(m["a"]), "parameters": {"weight": 0.3}},
                         {"model": str(m["b"]), "parameters": {"weight": 0.4}}]}
    ties = {"merge_method": "ties", "base_model": str(m["base"]), "dtype": "float32",
            "parameters": {"density": 0.6, "weight": 0.5},
            "models": [{"model": str(m["a"])}, {"model": str(m["b"])}]}
    return {
        "union": {**linear, "tokenizer_source": "union", "chat_template": "chatml"},
        "union-two": {"merge_method": "linear", "dtype": "float32", "tokenizer_source": "union",
                      "models": [{"model": str(m["a"]), "parameters": {"weight": 0.5}},
                                 {"model": str(m["b"]), "parameters": {"weight": 0.5}}]},
        "tokens": {**ties, "tokenizer": {
            "source": "union", "pad_to_multiple_of": 64,
            "tokens": {SPECIAL: {"source": str(m["b"]), "force": True},
                       "<s>": {"source": {"kind": "model_token", "model": str(m["a"]), "token": "</s>"}, "force": True},
                       "<brand-new>": {"source": {"kind": "zero"}}}}},
        "model-source": {**ties, "tokenizer": {"source": str(m["b"])}},
        "base-source": {**ties, "tokenizer_source": "base"},
    }


@pytest.mark.parametrize("case", ["union", "union-two", "tokens", "model-source", "base-source"])
def test_same_vocabulary_and_rows_as_mergekit(models, tmp_path, case):
    recipe = recipes(models)[case]
    # Without a base_model, mergekit's vocabulary starts from whichever input its set of models
    # yields first (hash order); mergenet's from the first one named. Name it for mergekit (linear
    # ignores the base, and it is already an input, so nothing else changes).
    theirs = mergekit_yaml({"base_model": recipe["models"][0]["model"], **recipe}, tmp_path / "theirs")
    ours = tmp_path / "ours"
    run_merge(load_recipe(recipe), ours, device="cpu")
    if case == "base-source":  # mergekit re-saves the base's tokenizer; mergenet copies its files
        assert (ours / "tokenizer.json").read_bytes() == (models["base"] / "tokenizer.json").read_bytes()
    assert_same_rows(ours, theirs)
    if case == "union":
        template = json.loads((ours / "tokenizer_config.json").read_text())["chat_template"]
        assert template == (theirs / "chat_template.jinja").read_text()


def test_union_is_reproducible_and_what_a_verifier_expects(models, tmp_path):
    recipe = load_recipe(recipes(models)["tokens"])
    run_merge(recipe, tmp_path / "one", device="cpu")
    run_merge(recipe, tmp_path / "two", device="cpu")
    spec = expected_folder(recipe, device="cpu")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes() == spec.files[name]
    # new tokens follow the base, then each input in id order: ordinary tokens, then added ones
    v, vb, va = vocab(tmp_path / "one"), vocab(models["b"]), vocab(models["base"])
    new = sorted((t for t in v if t not in va), key=v.get)
    plain = sorted((t for t in vb if t not in va and t != SPECIAL), key=vb.get)
    assert new == [*plain, SPECIAL, "<brand-new>"]
    assert [v[t] for t in new] == list(range(len(va), len(va) + len(new)))


def test_output_loads_in_transformers_with_the_new_tokens(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    run_merge(load_recipe(recipes(models)["tokens"]), out, device="cpu")
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    ids = tok(f"{SPECIAL}12+7=", return_tensors="pt").input_ids
    assert ids[0, 0].item() == vocab(out)[SPECIAL]  # matched as one token, as in model b
    rows = json.loads((out / "config.json").read_text())["vocab_size"]
    assert rows % 64 == 0 and rows > len(vocab(out)) and model(ids).logits.shape[-1] == rows
    emb = load_file(str(out / "model.safetensors"))["model.embed_tokens.weight"]
    assert torch.count_nonzero(emb[vocab(out)["<brand-new>"]]) == 0  # {kind: zero}


def test_without_settings_differing_vocabularies_name_the_block(models, tmp_path):
    recipe = recipes(models)["base-source"]
    del recipe["tokenizer_source"]
    with pytest.raises(IncompatibleModelsError, match=r"vocabularies differ; add `tokenizer: \{source: base\}`"):
        run_merge(load_recipe(recipe), tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_same_tokenizers_with_settings_change_nothing(models, tmp_path):
    """Identical vocabularies: the alignment is skipped and the tokenizer files are copied."""
    m = models
    plain = {"merge_method": "linear", "dtype": "float32",
             "models": [{"model": str(m["base"]), "parameters": {"weight": 0.5}},
                        {"model": str(m["a"]), "parameters": {"weight": 0.5}}]}
    run_merge(load_recipe(plain), tmp_path / "plain", device="cpu")
    run_merge(load_recipe({**plain, "tokenizer_source": "union"}), tmp_path / "union", device="cpu")
    for f in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / "plain" / f).read_bytes() == (tmp_path / "union" / f).read_bytes()


@pytest.mark.parametrize("tokens,needle", [
    ({"<x>": {}}, "needs a 'source'"),
    ({"<x>": {"source": "/not/an/input"}}, "is not an input of this tensor's merge"),
    ({"<x>": {"source": {"kind": "model_token", "model": "A", "token": "<nope>"}}}, "'<nope>' is not in model"),
    ({"<x>": {"source": {"kind": "model_token", "model": "A", "token_id": 10**6}}}, "out of range"),
])
def test_token_settings_errors(models, tmp_path, tokens, needle):
    tokens = json.loads(json.dumps(tokens).replace('"A"', json.dumps(str(models["a"]))))
    recipe = {**recipes(models)["union-two"], "tokenizer": {"source": "union", "tokens": tokens}}
    del recipe["tokenizer_source"]
    with pytest.raises(RecipeError, match=needle.replace("(", r"\(")):
        run_merge(load_recipe(recipe), tmp_path / "out", device="cpu")


@pytest.mark.parametrize("block,needle", [
    ({"source": "union", "bogus": 1}, "unknown key 'bogus'; supported: source, tokens, pad_to_multiple_of"),
    ({"tokens": {"<x>": {"source": {"kind": "one"}}}}, "kind must be one of model_token, zero"),
    ({"tokens": {"<x>": {"source": {"kind": "model_token", "model": "/a"}}}}, "exactly one of 'token' or 'token_id'"),
    ({"tokens": {"<x>": {"force": "yes"}}}, "force must be true or false"),
    ({"pad_to_multiple_of": 0}, "pad_to_multiple_of must be a positive integer"),
])
def test_tokenizer_block_errors_name_the_field(block, needle):
    with pytest.raises(RecipeError) as info:
        load_recipe({"merge_method": "linear", "models": ["/a", "/b"], "tokenizer": block})
    assert needle in str(info.value) and "tokenizer" in str(info.value)


def test_tokenizer_and_tokenizer_source_are_exclusive():
    with pytest.raises(RecipeError, match="either 'tokenizer' or 'tokenizer_source'"):
        load_recipe({"merge_method": "linear", "models": ["/a"], "tokenizer_source": "union",
                     "tokenizer": {"source": "base"}})


def test_tokenizer_block_round_trips_and_swaps_models():
    r = load_recipe({"merge_method": "linear", "models": ["x", "y"], "tokenizer": {
        "source": "y", "pad_to_multiple_of": 8,
        "tokens": {"<a>": {"source": "x", "force": True}, "<b>": {"source": {"kind": "model_token", "model": "y",
                                                                             "token_id": 3}},
                   "<c>": {"source": {"kind": "zero"}}}}})
    assert load_recipe(r.to_dict()) == r and load_recipe(r.to_yaml()) == r
    assert r.model_refs() == ["x", "y"]
    swapped = r.with_models({"x": "/m/x", "y": "/m/y"})
    assert swapped.tokenizer.source == "/m/y" and swapped.tokenizer.tokens["<a>"].source.model == "/m/x"
    assert swapped.tokenizer.tokens["<b>"].source.model == "/m/y"


def test_chat_templates(models, tmp_path):
    from merge.chat_templates import NAMED_TEMPLATES

    base = {"merge_method": "linear", "dtype": "float32",
            "models": [{"model": str(models["base"]), "parameters": {"weight": 0.5}},
                       {"model": str(models["a"]), "parameters": {"weight": 0.5}}]}
    literal = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    want = {"auto": "{% for m in messages %}{{ m['content'] }}{% endfor %}", "llama3": NAMED_TEMPLATES["llama3"],
            literal: literal}
    for i, (setting, text) in enumerate(want.items()):
        out = tmp_path / f"o{i}"
        run_merge(load_recipe({**base, "chat_template": setting}), out, device="cpu")
        assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == text
        assert not (out / "chat_template.jinja").exists()
    with pytest.raises(RecipeError, match="must be 'auto', one of alpaca, chatml, exaone, llama3, mistral"):
        load_recipe({**base, "chat_template": "vicuna"})
    # auto with no input template writes none
    run_merge(load_recipe({**base, "models": base["models"][:1], "chat_template": "auto"}), tmp_path / "none",
              device="cpu")
    assert "chat_template" not in json.loads((tmp_path / "none" / "tokenizer_config.json").read_text())


def test_named_templates_are_mergekits():
    from importlib.resources import files

    from mergekit._data import chat_templates

    from merge.chat_templates import NAMED_TEMPLATES

    shipped = {p.name.removesuffix(".jinja") for p in files(chat_templates).iterdir() if p.name.endswith(".jinja")}
    assert set(NAMED_TEMPLATES) == shipped
    for name, text in NAMED_TEMPLATES.items():
        assert text == files(chat_templates).joinpath(f"{name}.jinja").read_text()


def test_search_scores_candidates_with_the_tokenizer_the_merge_writes(models, tmp_path):
    """A union recipe's candidates are evaluated with the union tokenizer (so the tokens only
    model b knows are real tokens, as in the written model), not with the base's."""
    from transformers import AutoTokenizer

    from merge.search.candidate import CandidateMerger

    recipe = load_recipe(recipes(models)["union"])
    run_merge(recipe, tmp_path / "out", device="cpu")
    written = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    merger = CandidateMerger(recipe, torch.device("cpu"))
    try:
        text = f"{SPECIAL} hello world"
        assert merger.tokenizer.get_vocab() == written.get_vocab()
        assert merger.tokenizer(text)["input_ids"] == written(text)["input_ids"]
        assert SPECIAL in merger.tokenizer.get_vocab()
        assert SPECIAL not in AutoTokenizer.from_pretrained(str(models["base"])).get_vocab()
        assert merger.tokenizer.chat_template == written.chat_template
    finally:
        merger.close()
