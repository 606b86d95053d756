"""Recipe features as mergekit 0.1.5 has them: parameters at every precedence level (checked
against mergekit's own planner), every setting form, `int8_mask`, mergekit-yaml's command-line
options, Hugging Face names from the local cache, and recipes written the way mergekit's
examples and model cards write them, run unchanged on models named as on the Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from merge.errors import RecipeError
from merge.executor import run_merge
from merge.params import setting_value
from merge.plan import plan_merge
from merge.recipe import load_recipe
from tests.node.test_cli_ux import cache_state, fake_hf_cache

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A 5-layer Llama base and two experts: enough layers for gradients to matter."""
    from node.demo.models import TinySpec, make_family

    return make_family(tmp_path_factory.mktemp("deep"), "llama", n_experts=2, seed=3, spec=TinySpec(n_layers=5))


def mergekit_params(recipe: dict) -> dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
    """Per output tensor, (shared parameters, per-input parameters) as mergekit's planner resolves them."""
    from mergekit.architecture import get_architecture_info
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import _model_out_config
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    config = MergeConfiguration.model_validate(recipe)
    options = MergeOptions()
    arch = get_architecture_info(config, options)
    LoaderCache().setup(options=options)
    planner = MergePlanner(config, arch, options, _model_out_config(config, arch))
    planner._plan()  # plan_in_memory() trips over a pydantic generic in 0.1.5; the plan itself is what we need
    return {w.name: (dict(t.parameters), {str(m.model): dict(p) for m, p in t.input_parameters.items()})
            for w, t in planner._tensors}


def ours(recipe: dict) -> dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
    plan = plan_merge(load_recipe(recipe))
    return {t.name: (dict(t.global_params), {s.model: dict(p) for s, p in zip(t.inputs, t.model_params, strict=True)})
            for t in plan.tasks}


def precedence_recipes(base: Path, e1: Path, e2: Path) -> list[dict]:
    b, a, c = str(base), str(e1), str(e2)
    return [
        {"merge_method": "ties", "base_model": b,  # models: own > global, filters and gradients
         "parameters": {"density": [0.2, "0.9"], "weight": 0.3, "normalize": False, "lambda": 0.9},
         "models": [{"model": a, "parameters": {"weight": [{"filter": "mlp", "value": [1.0, 0.2, 0.6]},
                                                           {"filter": "self_attn", "value": 0.8}]}},
                    {"model": c, "parameters": {"weight": {"filter": "up_proj", "value": 0.7},
                                                "density": ["1e-1", "5e-1"]}}]},
        {"merge_method": "dare_linear", "base_model": b,  # slices: source > slice > global
         "parameters": {"density": 0.4, "weight": [0.1, 0.9], "rescale": False},
         "slices": [{"sources": [{"model": b, "layer_range": [0, 3]},
                                 {"model": a, "layer_range": [0, 3], "parameters": {"weight": 0.25}},
                                 {"model": c, "layer_range": [1, 4]}],
                     "parameters": {"density": [{"filter": "mlp", "value": 0.7}], "weight": [0.6, 0.2]}},
                    {"sources": [{"model": b, "layer_range": [3, 5]}, {"model": a, "layer_range": [3, 5]},
                                 {"model": c, "layer_range": [3, 5], "parameters": {"density": 0.9}}],
                     "parameters": {"weight": 0.5}}]},
        {"merge_method": "slerp", "base_model": b,  # the classic gradient slerp
         "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                              {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]},
         "slices": [{"sources": [{"model": b, "layer_range": [0, 5]}, {"model": a, "layer_range": [0, 5]}]}]},
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_parameters_resolve_as_mergekits_planner(deep, index):
    base, (e1, e2) = deep
    recipe = precedence_recipes(base, e1, e2)[index]
    want, got = mergekit_params(recipe), ours(recipe)
    assert set(got) == set(want)
    distinct = set()
    for name, (shared, per_input) in got.items():
        w_shared, w_inputs = want[name]
        for key in set(shared) & set(w_shared):
            assert shared[key] == pytest.approx(w_shared[key]), (name, key)
            distinct.add((key, shared[key]))
        for model, params in per_input.items():
            for key in set(params) & set(w_inputs[model]):
                assert params[key] == pytest.approx(w_inputs[model][key]), (name, model, key)
                distinct.add((key, params[key]))
    assert len(distinct) >= 5  # filters, gradients and scopes produced many values, all compared


@pytest.mark.parametrize("setting,kind", [
    ([0.0, 1.0, 0.5], float), (["1e-5", "1e-3"], float), ([True, False, True], bool), (["a", "b"], str),
    ({"filter": "mlp", "value": [0.1, 0.9]}, float), ([{"filter": "attn", "value": 2}, {"value": [1, 3]}], float),
    ([{"filter": "*", "value": 0.4}], float), ([{"filter": "nothing-matches", "value": 1.0}], float),
])
def test_setting_forms_evaluate_as_mergekit(setting, kind):
    from mergekit.config import ConditionalParameter, evaluate_setting
    from pydantic import TypeAdapter

    validate = TypeAdapter(kind).validate_python

    def theirs_setting(s: Any) -> Any:
        if isinstance(s, dict):
            return ConditionalParameter(**s)
        if isinstance(s, list) and s and isinstance(s[0], dict):
            return [ConditionalParameter(**c) for c in s]
        return s

    for tensor in ("model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        for t in (0.0, 0.3, 0.5, 1.0):
            want = evaluate_setting(tensor, theirs_setting(setting), t, validate=validate)
            got = setting_value(setting, tensor, t, kind)
            if want is None or kind is not float:
                assert got == want, (tensor, t)
            else:
                assert float(got) == pytest.approx(want), (tensor, t)


def test_int8_mask_is_accepted_and_changes_nothing(deep, tmp_path):
    base, (e1, e2) = deep
    recipe = {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
              "parameters": {"normalize": False, "density": 0.5, "weight": 0.5},
              "models": [{"model": str(e1)}, {"model": str(e2)}]}
    run_merge(load_recipe(recipe), tmp_path / "plain", device="cpu")
    run_merge(load_recipe({**recipe, "parameters": {**recipe["parameters"], "int8_mask": True}}), tmp_path / "int8",
              device="cpu")
    plain, int8 = ((tmp_path / d / "model.safetensors").read_bytes() for d in ("plain", "int8"))
    assert plain == int8


def test_modules_recipes_are_refused_naming_the_key(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("merge_method: linear\nmodules:\n  text_decoder:\n    models: [{model: /a}]\n")
    res = cli("merge", path, "-o", tmp_path / "out")
    assert res.code == 2 and "`modules:`" in res.err and "'models' or 'slices'" in res.err


def test_mergekit_yaml_options(families, cli, tmp_path):
    base, (e1, e2) = families["llama"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "dare_ties", "base_model": str(base), "dtype": "float32",
                                      "parameters": {"density": 0.5, "weight": 0.5},
                                      "models": [{"model": str(e1)}, {"model": str(e2)}]}))
    res = cli("merge", recipe, "-o", tmp_path / "a", "--out-shard-size", "50K", "--random-seed", "7",
              "--lazy-unpickle", "--copy-tokenizer", "--low-cpu-memory", "--json")
    assert res.code == 0, res.err
    shards = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "a" / "model.safetensors.index.json").is_file()
    assert max((tmp_path / "a" / s).stat().st_size for s in shards) < 50_000 + 20_000  # a shard holds ≤ 50K of tensors
    assert "random_seed: 7" in (tmp_path / "a" / "README.md").read_text()  # the card records the seed used
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text(recipe.read_text().replace("density: 0.5", "density: 0.5\n  random_seed: 7"))
    assert cli("merge", seeded, "-o", tmp_path / "b").code == 0
    a, b = {}, load_file(str(tmp_path / "b" / "model.safetensors"))
    for s in shards:
        a.update(load_file(str(tmp_path / "a" / s)))
    assert all(torch.equal(a[k], b[k]) for k in b)  # --random-seed 7 is random_seed: 7
    assert cli("merge", recipe, "-o", tmp_path / "c").code == 0
    c = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert not all(torch.equal(c[k], b[k]) for k in b)  # another seed, other masks
    bad = cli("merge", recipe, "-o", tmp_path / "d", "--out-shard-size", "5GB")
    assert bad.code == 2 and "K, M or B" in bad.err


def test_no_copy_tokenizer_leaves_the_tokenizer_out_unless_the_recipe_builds_one(families, cli, tmp_path):
    base, (e1, _) = families["llama"]
    plain = {"merge_method": "linear", "dtype": "float32",
             "models": [{"model": str(base), "parameters": {"weight": 0.5}},
                        {"model": str(e1), "parameters": {"weight": 0.5}}]}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(plain))
    assert cli("merge", recipe, "-o", tmp_path / "with").code == 0
    res = cli("merge", recipe, "-o", tmp_path / "without", "--no-copy-tokenizer")
    assert res.code == 0, res.err
    with_files = {p.name for p in (tmp_path / "with").iterdir()}
    without = {p.name for p in (tmp_path / "without").iterdir()}
    tokenizer = with_files - without
    assert "tokenizer.json" in tokenizer and "tokenizer_config.json" in tokenizer
    assert {"config.json", "model.safetensors", "README.md"} <= without
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("with", "without")]
    assert weights[0] == weights[1]
    # A recipe that builds its tokenizer (tokenizer_source) still writes it, as mergekit does.
    built = tmp_path / "built.yaml"
    built.write_text(yaml.safe_dump({**plain, "tokenizer_source": "base", "base_model": str(base)}))
    assert cli("merge", built, "-o", tmp_path / "built", "--no-copy-tokenizer").code == 0
    assert (tmp_path / "built" / "tokenizer.json").is_file()


def test_hugging_face_names_resolve_offline_from_the_cache(model_copy, tmp_path):
    """`org/name`, `org/name@revision` and bare `name` read the cached snapshot in place; a name
    never downloaded is exit 2 saying to download it; the cache is only read."""
    from tests.node.netutil import run_cli

    cache = tmp_path / "hf"
    commit = fake_hf_cache(cache, "acme/base", model_copy("llama", 0))
    fake_hf_cache(cache, "acme/math", model_copy("llama", 1))
    fake_hf_cache(cache, "tinyllama", model_copy("llama", 2))
    before = cache_state(cache)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": f"acme/base@{commit[:8]}",
                                      "parameters": {"weight": 0.5, "density": 0.5},
                                      "models": [{"model": "acme/math@main"}, {"model": "tinyllama"}]}))
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    res = run_cli("merge", str(recipe), "-o", str(tmp_path / "out"), "--json", home=tmp_path / "home", env=env)
    assert res.returncode == 0, res.stderr
    assert cache_state(cache) == before
    card = (tmp_path / "out" / "README.md").read_text()
    assert "acme/math@main" in card and "sha256:" in card  # named as written, with the weight digests
    recipe.write_text(recipe.read_text().replace("acme/math@main", "acme/never-downloaded"))
    missing = run_cli("merge", str(recipe), "-o", str(tmp_path / "o2"), home=tmp_path / "home", env=env)
    assert missing.returncode == 2 and "acme/never-downloaded is not in the local Hugging Face cache" in missing.stderr
    assert "download it first" in missing.stderr
    recipe.write_text(recipe.read_text().replace("acme/never-downloaded", "acme/math@v9"))
    rev = run_cli("merge", str(recipe), "-o", str(tmp_path / "o3"), home=tmp_path / "home", env=env)
    assert rev.returncode == 2 and "acme/math@v9 is not in the local Hugging Face cache" in rev.stderr


def test_plans_never_resolve_names_or_paths(tmp_path):
    from node.errors import NodeInputError
    from node.ops.inputs import InputResolver

    resolver = InputResolver(lambda mid, dest: dest, tmp_path, allow_paths=False)
    for ref in ("acme/base", "gpt2", "./base"):
        with pytest.raises(NodeInputError, match="is not a model id"):
            resolver.folder(ref)


# Recipes as mergekit's examples and model cards write them, naming models by Hub name. Each runs
# unchanged on a fake Hugging Face cache holding tiny models under those names.
CARD_RECIPES = {
    "ties-int8": """
models:
  - model: mistralai/Mistral-7B-Instruct-v0.2
    parameters: {density: 0.5, weight: 0.5}
  - model: BioMistral/BioMistral-7B
    parameters: {density: 0.5, weight: 0.5}
merge_method: ties
base_model: mistralai/Mistral-7B-v0.1
parameters:
  normalize: false
  int8_mask: true
dtype: float16
""",
    "gradient-slerp": """
slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 2]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 2]
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
""",
    "frankenmerge": """
slices:
  - sources:
    - model: psmathur/orca_mini_v3_13b
      layer_range: [0, 2]
  - sources:
    - model: garage-bAInd/Platypus2-13B
      layer_range: [1, 2]
merge_method: passthrough
dtype: float16
""",
    "bare-name": """
slices:
  - sources:
    - model: gpt2
      layer_range: [0, 1]
merge_method: passthrough
dtype: float16
""",
    "linear-revision": """
models:
  - model: mistralai/Mistral-7B-v0.1@main
    parameters: {weight: 1.0}
  - model: BioMistral/BioMistral-7B
    parameters: {weight: 0.3}
merge_method: linear
parameters: {normalize: true}
dtype: float16
""",
    "dare-lora-union-chatml": """
models:
  - model: mistralai/Mistral-7B-v0.1
  - model: mistralai/Mistral-7B-Instruct-v0.2+someone/mistral-lora
    parameters: {density: 0.53, weight: 0.4}
  - model: teknium/OpenHermes-chatml
    parameters: {density: 0.53, weight: 0.4}
merge_method: dare_ties
base_model: mistralai/Mistral-7B-v0.1
parameters: {int8_mask: true}
tokenizer:
  source: union
  tokens:
    <|im_start|>:
      source: teknium/OpenHermes-chatml
    <|im_end|>:
      source: teknium/OpenHermes-chatml
chat_template: auto
dtype: bfloat16
""",
    "della-tokenizer-source": """
models:
  - model: mistralai/Mistral-7B-Instruct-v0.2
    parameters: {weight: [0.2, 0.8], density: 0.6, epsilon: 0.1}
  - model: BioMistral/BioMistral-7B
    parameters: {weight: 0.5, density: 0.6, epsilon: 0.1}
merge_method: della
base_model: mistralai/Mistral-7B-v0.1
parameters: {lambda: 1.0, normalize: true}
tokenizer_source: base
chat_template: chatml
dtype: bfloat16
""",
}
MISSING_FEATURES = {  # recipes that name something mergenet lacks: the error names exactly it
    "merge_method: ranked_ties\nmodels: [{model: microsoft/phi-2}]\n": "unknown merge_method 'ranked_ties'",
    "merge_method: linear\nmodules: {text_decoder: {models: [{model: a/b}]}}\n": "`modules:`",
    "merge_method: linear\nmodels: [{model: a/b}]\nparameters:\n  t: [{pattern: mlp, value: 1}]\n":
        "unknown key 'pattern'; supported: filter, value",
    "base_model: a/b\nmodels: [{model: a/b}]\nmerge_method: linear\ngate_mode: hidden\n": "unknown key 'gate_mode'",
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """A fake Hugging Face cache with every name the card recipes use (tiny Llamas of one family;
    the chatml one has a tokenizer of its own with ChatML tokens and a template; a LoRA adapter)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from node.demo.models import TinySpec, make_family, make_model, make_tokenizer
    from tests.merge.test_lora import make_adapter

    root = tmp_path_factory.mktemp("hub")
    base, experts = make_family(root / "fam", "llama", n_experts=4, seed=11, spec=TinySpec(n_layers=2))
    chat_tok = make_tokenizer(root / "chat-tok", vocab_size=330, seed=5)
    tok = AutoTokenizer.from_pretrained(str(chat_tok))
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|im_start|>", "<|im_end|>")])
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    tok.save_pretrained(str(chat_tok))
    chat = make_model(root / "chat", "llama", seed=12, tokenizer_dir=chat_tok, spec=TinySpec(n_layers=2))
    make_adapter(experts[0], root / "lora", ["q_proj", "v_proj"], seed=4)
    cache = root / "cache"
    names = {"mistralai/Mistral-7B-v0.1": base, "mistralai/Mistral-7B-Instruct-v0.2": experts[0],
             "BioMistral/BioMistral-7B": experts[1], "psmathur/orca_mini_v3_13b": experts[2],
             "garage-bAInd/Platypus2-13B": experts[3], "gpt2": experts[2], "teknium/OpenHermes-chatml": chat,
             "someone/mistral-lora": root / "lora"}
    for name, folder in names.items():
        fake_hf_cache(cache, name, folder)
    return cache


def test_card_recipes_run_unchanged_on_cached_models(hub, tmp_path):
    """Every recipe in one process (imports once); `HF_HUB_CACHE` must be set before huggingface_hub loads."""
    for name, text in CARD_RECIPES.items():
        (tmp_path / f"{name}.yml").write_text(text)
    for i, text in enumerate(MISSING_FEATURES):
        (tmp_path / f"missing-{i}.yml").write_text(text)
    script = (
        "import json, sys\n"
        "from node.cli.main import main\n"
        "codes = {}\n"
        "for recipe in sys.argv[1:]:\n"
        "    codes[recipe] = main(['merge', recipe, '-o', recipe + '.out', '--home', sys.argv[1] + '.home'])\n"
        "print(json.dumps(codes))\n")
    names = [str(tmp_path / f"{n}.yml") for n in CARD_RECIPES] + \
            [str(tmp_path / f"missing-{i}.yml") for i in range(len(MISSING_FEATURES))]
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "MERGENET_NO_PROGRESS": "1"}
    res = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=600)
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    for name in CARD_RECIPES:
        assert codes[str(tmp_path / f"{name}.yml")] == 0, (name, res.stderr[-3000:])
        assert (tmp_path / f"{name}.yml.out" / "config.json").is_file()
    for i, needle in enumerate(MISSING_FEATURES.values()):
        assert codes[str(tmp_path / f"missing-{i}.yml")] == 2
        assert needle in res.stderr, needle
    out = tmp_path / "dare-lora-union-chatml.yml.out"
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"] == "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    assert "<|im_start|>" in (out / "tokenizer.json").read_text()  # auto: the one template among the inputs
    named = json.loads((tmp_path / "della-tokenizer-source.yml.out" / "tokenizer_config.json").read_text())
    assert named["chat_template"].startswith("{% for message in messages %}{{'<|im_start|>'")


def test_unknown_keys_list_what_is_supported():
    with pytest.raises(RecipeError) as info:
        load_recipe("merge_method: linear\nmodels: [/a]\ntokenizer_sorce: union\n")
    assert "unknown key 'tokenizer_sorce'; supported: " in str(info.value)
    assert "tokenizer_source, tokenizer, chat_template" in str(info.value)
