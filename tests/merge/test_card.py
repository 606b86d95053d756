"""Model cards carry the Hugging Face Hub's front matter, so an uploaded merged model shows its
parents in the Hub's model tree: base_model (the inputs), base_model_relation, tags, license,
library_name; checked by parsing the YAML the card starts with."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from merge.card import hub_license, model_card
from merge.executor import run_merge
from merge.fusion import card as fusion_card
from merge.fusion.recipe import load_recipe as load_fusion_recipe
from merge.recipe import load_recipe

BASE_ID = "sha256:" + "ab" * 32
EXPERT_ID = "sha256:" + "cd" * 32


def front(card: str) -> dict:
    """The card's YAML front matter, parsed (it must open the file, fenced by `---` lines)."""
    assert card.startswith("---\n")
    block, sep, _ = card[4:].partition("\n---\n")
    assert sep, "front matter is not closed"
    return yaml.safe_load(block)


def check_hub_keys(meta: dict, inputs: list[str], license: str) -> None:
    assert meta["base_model"] == inputs
    assert meta["base_model_relation"] == "merge"
    assert {"merge", "mergenet"} <= set(meta["tags"])
    assert meta["license"] == license
    assert meta["library_name"] == "transformers"


def test_inputs_are_named_by_the_ids_the_caller_gives_else_as_written():
    recipe = load_recipe({"merge_method": "ties", "base_model": BASE_ID, "models": [
        {"model": "./signed-expert", "parameters": {"weight": 0.5}},
        {"model": "./plain: expert #1", "parameters": {"weight": 0.5}}]})
    card = model_card(recipe, {"./signed-expert": EXPERT_ID, "./plain: expert #1": "model.safetensors sha256:00"},
                      license="Apache-2.0")
    meta = front(card)
    check_hub_keys(meta, [BASE_ID, EXPERT_ID, "./plain: expert #1"], "apache-2.0")
    assert "ties" in meta["tags"]
    assert "model.safetensors sha256:00" in card  # the exact bytes of an unsigned input, in the body


@pytest.mark.parametrize(("spdx", "fields"), [
    ("MIT", {"license": "mit"}),
    ("Apache-2.0", {"license": "apache-2.0"}),
    ("MIT AND Apache-2.0", {"license": "other", "license_name": "mit-and-apache-2.0"}),
    ("NOASSERTION", {"license": "unknown"}),
    (None, {"license": "unknown"}),
])
def test_licenses_become_the_hubs_ids(spdx, fields):
    assert hub_license(spdx) == fields


def test_a_real_merge_writes_the_front_matter(families, tmp_path):
    base, (e1, e2) = families["llama"]
    recipe = load_recipe({"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
                          "models": [{"model": str(e1), "parameters": {"weight": 0.5}},
                                     {"model": str(e2), "parameters": {"weight": 0.5}}]})
    run_merge(recipe, tmp_path / "out", device="cpu", inputs={str(e1): EXPERT_ID}, license="MIT AND Apache-2.0")
    meta = front((tmp_path / "out" / "README.md").read_text())
    check_hub_keys(meta, [str(base), EXPERT_ID, str(e2)], "other")
    assert meta["license_name"] == "mit-and-apache-2.0"


def test_a_fusion_card_names_target_and_sources(tmp_path: Path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "response": "b"}\n')
    recipe = load_fusion_recipe({"target": EXPERT_ID, "sources": [BASE_ID, "./qwen-expert"], "data": str(data)})
    scores = {"lm_loss": 1.0, "fused_kl": 0.5}
    result = {"before": scores, "after": scores, "aligned_fraction": [0.9, 0.8], "mean_weights": [0.5, 0.3, 0.2],
              "examples": 1, "data_sha256": "00" * 32, "device": "cpu", "steps": 1}
    meta = front(fusion_card.model_card(recipe, result, license="MIT"))
    check_hub_keys(meta, [EXPERT_ID, BASE_ID, "./qwen-expert"], "mit")
    assert "fusion" in meta["tags"]
