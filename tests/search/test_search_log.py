"""The search log tells what was evaluated: a per-filter weight in the recipe is logged (and
merged) as written for the start, not collapsed to its catch-all value (issue 12)."""

from __future__ import annotations

import json

import torch

from merge.eval import load_tasks
from merge.recipe import load_recipe
from merge.search import SearchConfig, run_search

FILTERED = [{"filter": "mlp", "value": 0.7}, {"value": 0.4}]


def test_a_filter_list_weight_is_logged_as_written(landscape, tmp_path):
    recipe = load_recipe({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(landscape["good"]), "parameters": {"weight": FILTERED}},
        {"model": str(landscape["bad"]), "parameters": {"weight": 0.5}}]})
    result = run_search(recipe, load_tasks(landscape["tasks"]), tmp_path / "out",
                        SearchConfig(budget=1, group_size=4, seed=0), device=torch.device("cpu"))
    first = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()][1]
    assert first["eval"] == 0
    assert first["params"][str(landscape["good"])]["weight"] == FILTERED
    assert first["params"][str(landscape["bad"])]["weight"] == [0.5] * 4  # a plain value: per layer
    # what was evaluated is the recipe as written, and best.yaml (the start won) keeps the filter
    assert result.best["eval"] == 0
    assert "filter: mlp" in (tmp_path / "out" / "best.yaml").read_text()
