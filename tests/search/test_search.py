"""Layer-wise search: uniform start first, never worse than it, finds a known better point,
best.yaml reproduces OUT/model through `mergenet merge`, and resume replays exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from merge.errors import MergeInputError
from merge.eval import evaluate, load_model, load_tasks
from merge.recipe import load_recipe
from merge.search import SearchConfig, SearchSpace, run_search
from tests.search.conftest import linear_recipe

BUDGET = 13  # seed 0 finds the better region within this budget (checked by the tests below)


def read_evals(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "eval"]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


@pytest.fixture(scope="module")
def searched(landscape, tmp_path_factory):
    """One CLI search over the landscape, shared by the tests that only read its outputs."""
    from node.cli.main import main

    root = tmp_path_factory.mktemp("searched")
    recipe = linear_recipe(root / "recipe.yaml", landscape["good"], landscape["bad"])
    out = root / "out"
    code = main(["search", str(recipe), "--eval", str(landscape["tasks"]), "--budget", str(BUDGET), "-o", str(out),
                 "--group-size", "4", "--seed", "0", "--device", "cpu", "--home", str(root / "home")])
    assert code == 0
    return {"recipe": recipe, "out": out}


def test_outputs_exist(searched):
    out = searched["out"]
    for name in ("best.yaml", "log.jsonl", "fitness.png", "model/config.json", "model/tokenizer.json"):
        assert (out / name).is_file(), name
    assert (out / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_evals(out)) == BUDGET


def test_first_evaluation_is_the_uniform_recipe(searched, landscape):
    first = read_evals(searched["out"])[0]
    assert first["eval"] == 0 and first["generation"] == -1
    per_layer = {Path(m).name: p["weight"] for m, p in first["params"].items()}
    assert per_layer == {"good": [0.5] * 4, "bad": [0.5] * 4}
    # and its score is the score of the recipe merged as written
    from merge.executor import run_merge

    merged = run_merge(load_recipe(searched["recipe"]), searched["out"].parent / "uniform", device="cpu")
    model, tok = load_model(merged.out_dir)
    assert evaluate(model, tok, load_tasks(landscape["tasks"])).fitness == pytest.approx(first["fitness"], abs=1e-9)


def test_search_finds_a_strictly_better_point(searched):
    evals = read_evals(searched["out"])
    start, best = evals[0], max(evals, key=lambda r: r["fitness"])
    assert start["accuracy"] == 0.0  # the noisy expert ruins the uniform average
    assert best["accuracy"] > start["accuracy"]
    weights = {Path(m).name: p["weight"][0] for m, p in best["params"].items()}
    assert weights["bad"] < weights["good"]  # by down-weighting the useless expert


def test_best_yaml_reproduces_the_model(searched, cli, landscape, tmp_path):
    out = searched["out"]
    best = load_recipe(out / "best.yaml")
    assert all(isinstance(m.parameters["weight"], list) and len(m.parameters["weight"]) == 4 for m in best.models)
    res = cli("merge", out / "best.yaml", "-o", tmp_path / "again", "--device", "cpu")
    assert res.code == 0, res.err
    a, b = tensors(out / "model"), tensors(tmp_path / "again")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the written model scores what the in-memory candidate scored
    model, tok = load_model(out / "model")
    logged = max(read_evals(out), key=lambda r: r["fitness"])
    assert evaluate(model, tok, load_tasks(landscape["tasks"])).fitness == pytest.approx(logged["fitness"], abs=1e-9)


def test_search_never_ends_worse_than_the_start(landscape, tmp_path):
    """A budget too small to improve returns the uniform start itself."""
    recipe = load_recipe(linear_recipe(tmp_path / "r.yaml", landscape["good"], landscape["bad"]))
    result = run_search(recipe, load_tasks(landscape["tasks"]), tmp_path / "out",
                        SearchConfig(budget=3, group_size=4, seed=0), device=torch.device("cpu"))
    assert result.best["fitness"] >= result.start["fitness"]
    assert result.start["eval"] == 0


def test_resume_replays_the_log_exactly(landscape, searched, tmp_path):
    recipe = load_recipe(linear_recipe(tmp_path / "r.yaml", landscape["good"], landscape["bad"]))
    tasks = load_tasks(landscape["tasks"])
    full = read_evals(searched["out"])
    # An interrupted run: the log holds 5 evaluations and a torn sixth line.
    out = tmp_path / "out"
    out.mkdir()
    lines = (searched["out"] / "log.jsonl").read_text().splitlines()
    (out / "log.jsonl").write_text("\n".join(lines[:6]) + "\n" + lines[6][:20])
    with pytest.raises(MergeInputError, match="--resume"):
        run_search(recipe, tasks, out, SearchConfig(budget=BUDGET, group_size=4, seed=0), device=torch.device("cpu"))
    result = run_search(recipe, tasks, out, SearchConfig(budget=BUDGET, group_size=4, seed=0),
                        device=torch.device("cpu"), resume=True)
    resumed = read_evals(out)
    assert [r["x"] for r in resumed] == [r["x"] for r in full]
    assert [r["fitness"] for r in resumed] == pytest.approx([r["fitness"] for r in full], abs=1e-9)
    assert [r["seconds"] for r in resumed[:5]] == [r["seconds"] for r in full[:5]]  # replayed, not re-run
    assert result.best["eval"] == max(full, key=lambda r: r["fitness"])["eval"]
    # a different search cannot resume this log
    with pytest.raises(MergeInputError, match="different seed"):
        run_search(recipe, tasks, out, SearchConfig(budget=BUDGET, group_size=4, seed=1),
                   device=torch.device("cpu"), resume=True)


def test_genome_per_layer_lists_and_density_genes(landscape):
    recipe = load_recipe({"merge_method": "ties", "base_model": str(landscape["good"]),
                          "models": [{"model": str(landscape["bad"]), "parameters": {"weight": 0.7}}]})
    space = SearchSpace.from_recipe(recipe, n_layers=5, group_size=2)
    assert space.n_groups == 3 and space.dim == 6  # 3 groups × 1 model × {weight, density}
    starts = {(g.param, g.group): g.start for g in space.genes}
    assert starts[("weight", 0)] == 0.7 and starts[("density", 2)] == 1.0  # ties' declared default
    x = [0.0, 0.5, 1.0, 0.0, 0.5, 1.0]
    lists = space.layer_lists(x)[str(landscape["bad"])]
    assert lists["weight"] == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert lists["density"] == [0.1, 0.1, 0.55, 0.55, 1.0]


def test_cli_search_rejects_bad_inputs(cli, landscape, tmp_path):
    recipe = linear_recipe(tmp_path / "r.yaml", landscape["good"], landscape["bad"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    res = cli("search", recipe, "--eval", landscape["tasks"], "-o", tmp_path / "full", "--budget", "2")
    assert res.code == 2 and "--resume" in res.err
    sliced = tmp_path / "s.yaml"
    sliced.write_text(f"merge_method: linear\nslices:\n  - sources:\n      - model: {landscape['good']}\n"
                      f"        layer_range: [0, 4]\n        parameters: {{weight: 1.0}}\n")
    res = cli("search", sliced, "--eval", landscape["tasks"], "-o", tmp_path / "o2", "--budget", "2")
    assert res.code == 2 and "'models' list" in res.err
    bad_tasks = tmp_path / "bad.jsonl"
    bad_tasks.write_text('{"prompt": "1+1="}\n')
    res = cli("search", recipe, "--eval", bad_tasks, "-o", tmp_path / "o3", "--budget", "2")
    assert res.code == 2 and "line 1" in res.err
    shutil.rmtree(tmp_path / "full")


@pytest.mark.parametrize("method", ["dare_ties", "ties"])
def test_in_memory_candidates_equal_the_executor_for_sparsifying_methods(landscape, memorizer, method, tmp_path):
    """Density genes and seeded random dropping: OUT/model (written by the executor from the best
    recipe) scores exactly what the in-memory candidate scored, and best.yaml re-merges equal."""
    from merge.executor import run_merge

    recipe = load_recipe({"merge_method": method, "base_model": str(memorizer), "parameters": {"random_seed": 5},
                          "models": [{"model": str(landscape["good"]), "parameters": {"weight": 0.6, "density": 0.7}},
                                     {"model": str(landscape["bad"]), "parameters": {"weight": 0.3, "density": 0.4}}]})
    tasks = load_tasks(landscape["tasks"])
    result = run_search(recipe, tasks, tmp_path / "out", SearchConfig(budget=3, group_size=2, seed=0),
                        device=torch.device("cpu"))
    assert {g.param for g in SearchSpace.from_recipe(recipe, 4, 2).genes} == {"weight", "density"}
    run_merge(load_recipe(tmp_path / "out" / "best.yaml"), tmp_path / "again", device="cpu")
    a, b = tensors(tmp_path / "out" / "model"), tensors(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, tok = load_model(tmp_path / "out" / "model")
    assert evaluate(model, tok, tasks).fitness == pytest.approx(result.best["fitness"], abs=1e-9)


def test_cli_search_by_registry_ids_resumes_and_reproduces(cli, home, landscape, tmp_path):
    from registry.local import LocalRegistry

    reg = LocalRegistry(home)
    ids = {}
    for name in ("good", "bad"):
        shutil.copytree(landscape[name], tmp_path / name)
        ids[name] = reg.submit(tmp_path / name).id
    reg.close()
    recipe = linear_recipe(tmp_path / "r.yaml", ids["good"], ids["bad"])
    out = tmp_path / "out"
    first = cli("search", recipe, "--eval", landscape["tasks"], "-o", out, "--budget", "3", "--group-size", "4")
    assert first.code == 0, first.err
    # a second run continues the same log (inputs are materialized into a new scratch folder)
    res = cli("search", recipe, "--eval", landscape["tasks"], "-o", out, "--budget", "5", "--group-size", "4",
              "--resume", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["evaluations"] == 5
    evals = read_evals(out)
    assert [r["eval"] for r in evals] == [0, 1, 2, 3, 4]
    assert set(evals[0]["params"]) == {ids["good"], ids["bad"]}
    assert {m.model for m in load_recipe(out / "best.yaml").models} == {ids["good"], ids["bad"]}
    again = cli("merge", out / "best.yaml", "-o", tmp_path / "again", "--device", "cpu")
    assert again.code == 0, again.err
    a, b = tensors(out / "model"), tensors(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)
