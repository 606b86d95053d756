"""The homogeneous small-scale study: do merges of an addition expert and a multiplication expert
(fine-tuned from one base) solve composite problems a*b+c that need both skills, and does a
layer-wise CMA-ES search beat uniform merging?

    python examples/small_scale/run_study.py --work /tmp/small_scale            # the full study
    python examples/small_scale/run_study.py --work /tmp/ss_quick --quick       # a smoke run, < 1 min

Per training seed: char tokenizer → tiny Llama pre-trained on the easy cases of all three
formats (the base: knows the formats, weak at the skills; see data.py) → expert A
(add), expert B (mul) and the joint control (add + mul, same budget), each fine-tuned at a lower
learning rate with replay of the base's data → uniform linear, task arithmetic, TIES and
DARE-TIES merges (`run_merge`) → layer-wise CMA-ES searches over
TIES and DARE-TIES on the validation split (`run_search`, one evaluation budget, several search
seeds) → a greedy soup of the base and experts picked on validation → every model evaluated on the
same held-out test items (`evaluate`). All numbers, per-item outcomes included, go to
`results.json` in the work dir (and `RESULTS.json` here for the full run); `report.py` turns them
into tables and plots. Trained models, merges and searches are reused on a rerun with the same
settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import SKILLS, sample, training_pairs, write_tasks
from steps import write_steps
from train import TrainSpec, cached_train, make_char_tokenizer

from merge.errors import MergeInputError
from merge.eval import evaluate, load_model, load_tasks
from merge.executor import run_merge
from merge.recipe import load_recipe
from merge.search import SearchConfig, run_search
from node.demo.models import TinySpec, make_model

log = logging.getLogger("study")
HERE = Path(__file__).resolve().parent
EVAL_SEED = 0  # the val/test items are the same for every training seed and every model
MAX_NEW_TOKENS = 32  # the longest composite answer has 23 characters; merge.eval's default is 16


@dataclass(frozen=True)
class StudyConfig:
    seeds: tuple[int, ...]
    search_seeds: tuple[int, ...]
    model: TinySpec
    base_pool: int          # training problems per skill in the base's data mix
    base_steps: int
    base_lr: float
    expert_steps: int
    expert_lr: float
    replay: float           # share of each fine-tuning batch drawn from the base's data mix
    val_items: int          # per skill: the search's fitness set
    test_items: int         # per skill
    budget: int             # evaluations per search (the uniform start is the first)
    weight_bounds: tuple[float, float]
    density: float          # of the uniform TIES / DARE-TIES merges
    eval_batch: int


FULL = StudyConfig(seeds=(0, 1, 2), search_seeds=(0, 1), model=TinySpec(n_layers=4, hidden=64, heads=4,
                   intermediate=192, max_positions=64), base_pool=20000, base_steps=1500, base_lr=3e-3,
                   expert_steps=1200, expert_lr=1e-3, replay=0.3, val_items=60, test_items=300, budget=60,
                   weight_bounds=(0.0, 1.5), density=0.5, eval_batch=128)
QUICK = StudyConfig(seeds=(0, 1), search_seeds=(0,), model=TinySpec(n_layers=2, hidden=32, heads=4,
                    intermediate=64, max_positions=64), base_pool=500, base_steps=30, base_lr=3e-3,
                    expert_steps=15, expert_lr=1e-3, replay=0.5, val_items=6, test_items=10, budget=4,
                    weight_bounds=(0.0, 1.5), density=0.5, eval_batch=64)


def expert_pairs(own: dict[str, int], cfg: StudyConfig, seed: int) -> list[tuple[str, str]]:
    """Fine-tuning data: `own` problems plus a `replay` share drawn from the base's own mix (the
    same problems it was trained on), which keeps the experts from forgetting what the base knew."""
    n_own = sum(own.values())
    n_replay = round(n_own * cfg.replay / (1 - cfg.replay))
    base_mix = training_pairs({s: cfg.base_pool for s in SKILLS}, seed, regime="easy")
    return training_pairs(own, seed + 100) + base_mix[:n_replay]


def uniform_recipes(base: Path, a: Path, b: Path, density: float) -> dict[str, dict]:
    """The uniform merges, with stated settings. Task-vector methods use weight 1 and no
    normalization (base + Σ τ after each method's sparsification), so the searches, which start
    from the TIES and DARE-TIES entries, can move each layer toward the base or past weight 1."""
    def models(**params: Any) -> list[dict]:
        return [{"model": str(a), "parameters": dict(params)}, {"model": str(b), "parameters": dict(params)}]

    common = {"base_model": str(base), "dtype": "float32"}
    return {
        "linear": {"merge_method": "linear", "dtype": "float32", "models": models(weight=0.5)},
        "task arithmetic": {**common, "merge_method": "task_arithmetic", "models": models(weight=1.0)},
        "TIES": {**common, "merge_method": "ties", "parameters": {"normalize": False},
                 "models": models(weight=1.0, density=density)},
        "DARE-TIES": {**common, "merge_method": "dare_ties", "parameters": {"normalize": False},
                      "models": models(weight=1.0, density=density)},
    }


def merge_to(recipe_data: dict, out: Path) -> Path:
    recipe = load_recipe(recipe_data)
    out.with_suffix(".yaml").write_text(recipe.to_yaml())
    shutil.rmtree(out, ignore_errors=True)  # cheap (< 1 s): always rebuilt from the stated recipe
    run_merge(recipe, out, device="cpu")
    return out


def score(path: Path, tasks, batch: int) -> dict:
    """Test (or val) outcome of one model: accuracies and the per-item outcomes, in file order."""
    model, tok = load_model(path)
    result = evaluate(model, tok, tasks, batch_size=batch, max_new_tokens=MAX_NEW_TOKENS)
    correct: dict[str, str] = {}
    for t, ok in zip(tasks, result.correct, strict=True):
        correct[t.task] = correct.get(t.task, "") + ("1" if ok else "0")
    return {**result.to_dict(), "correct": correct}


def search(recipe_data: dict, val, out: Path, cfg: StudyConfig, seed: int, inputs: dict) -> dict:
    """One layer-wise CMA-ES search, resumed from its own log when rerun (a finished log is
    replayed without re-evaluating); a log from other settings or other input models (`inputs`:
    their training records, since a retrained model keeps its path) is discarded."""
    marker = out.with_name(out.name + ".inputs.json")
    if not marker.is_file() or json.loads(marker.read_text()) != inputs:
        shutil.rmtree(out, ignore_errors=True)
        marker.write_text(json.dumps(inputs))
    config = SearchConfig(budget=cfg.budget, group_size=1, seed=seed, bounds={"weight": cfg.weight_bounds},
                          batch_size=cfg.eval_batch, max_new_tokens=MAX_NEW_TOKENS)
    recipe = load_recipe(recipe_data)
    try:
        result = run_search(recipe, val, out, config, device=torch.device("cpu"), resume=True)
    except MergeInputError:
        shutil.rmtree(out, ignore_errors=True)
        result = run_search(recipe, val, out, config, device=torch.device("cpu"))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()[1:]]
    return {"start_val": result.start["accuracy"], "best_val": result.best["accuracy"],
            "best_eval": result.best["eval"], "evaluations": result.evaluations,
            "curve": [r["accuracy"] for r in records], "params": result.best["params"]}


def greedy_soup(ingredients: dict[str, Path], val, work: Path, batch: int) -> tuple[Path, dict]:
    """Greedy soup (Wortsman et al. 2022): ingredients in order of validation accuracy; each is
    kept in the uniform linear average if that does not lower validation fitness."""
    val_scores = {name: evaluate(*load_model(p), val, batch_size=batch, max_new_tokens=MAX_NEW_TOKENS).fitness
                  for name, p in ingredients.items()}
    order = sorted(ingredients, key=lambda n: -val_scores[n])
    members, best, path = [order[0]], val_scores[order[0]], ingredients[order[0]]
    for name in order[1:]:
        trial = [*members, name]
        out = merge_to({"merge_method": "linear", "dtype": "float32",
                        "models": [{"model": str(ingredients[m]), "parameters": {"weight": 1.0}} for m in trial]},
                       work / f"soup_{len(trial)}")
        fit = evaluate(*load_model(out), val, batch_size=batch, max_new_tokens=MAX_NEW_TOKENS).fitness
        if fit >= best:
            members, best, path = trial, fit, out
    return path, {"members": members, "val_fitness": best, "ingredient_val_fitness": val_scores}


def run_seed(seed: int, cfg: StudyConfig, root: Path, val_file: Path, test_file: Path,
             timings: dict[str, float]) -> dict:
    work = root / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)

    def timed(name: str, t: float) -> None:
        timings[f"seed {seed}: {name}"] = round(time.time() - t, 1)
        log.info("seed %d: %s took %.1fs", seed, name, time.time() - t)

    t = time.time()
    tok = make_char_tokenizer(work / "tokenizer")
    init = make_model(work / "init", "llama", seed, tok, cfg.model)
    key = {"model": asdict(cfg.model), "pool": cfg.base_pool, "seed": seed, "base data": "easy"}
    training = {"base": cached_train(init, work / "base", lambda: training_pairs(
        {s: cfg.base_pool for s in SKILLS}, seed, regime="easy"),
        TrainSpec(cfg.base_steps, cfg.base_lr, seed=seed), key)}
    timed("train base", t)
    n_own = cfg.base_pool
    # Each expert learns its skill plainly and inside the chain (data.py's regimes); the joint
    # control gets both experts' data in the same budget.
    own = {"expert A (add)": {"add": n_own, "composite:carry": n_own // 2},
           "expert B (mul)": {"mul": n_own, "composite:factor": n_own // 2},
           "joint control": {"add": n_own // 2, "composite:carry": n_own // 4,
                             "mul": n_own // 2, "composite:factor": n_own // 4}}
    paths = {"base": work / "base"}
    for name, mix in own.items():
        t = time.time()
        paths[name] = work / {"expert A (add)": "expert_add", "expert B (mul)": "expert_mul"}.get(name, "joint")
        spec = TrainSpec(cfg.expert_steps, cfg.expert_lr, warmup=20, seed=seed + 1)
        training[name] = cached_train(work / "base", paths[name], lambda mix=mix: expert_pairs(mix, cfg, seed),
                                      spec, {**key, "base": training["base"], "own": mix, "replay": cfg.replay})
        timed(f"fine-tune {name}", t)
    val, test = load_tasks(val_file), load_tasks(test_file)

    t = time.time()
    recipes = uniform_recipes(paths["base"], paths["expert A (add)"], paths["expert B (mul)"], cfg.density)
    for name, data in recipes.items():
        paths[name] = merge_to(data, work / name.replace(" ", "_"))
    timed("uniform merges", t)
    searches = {}
    for method in ("TIES", "DARE-TIES"):
        for s in cfg.search_seeds:
            t = time.time()
            name = f"searched {method} (search seed {s})"
            out = work / f"search_{method}_{s}"
            searches[name] = search(recipes[method], val, out, cfg, s, training)
            paths[name] = out / "model"
            timed(f"{name}, {cfg.budget} evaluations", t)
    t = time.time()
    paths["greedy soup"], soup = greedy_soup({k: paths[k] for k in ("base", "expert A (add)", "expert B (mul)")},
                                             val, work, cfg.eval_batch)
    timed("greedy soup", t)
    t = time.time()
    models = {name: score(p, test, cfg.eval_batch) for name, p in paths.items()}
    uniform_val = {m: score(paths[m], val, cfg.eval_batch)["accuracy"] for m in ("TIES", "DARE-TIES")}
    timed("test evaluation", t)
    return {"models": models, "searches": searches, "uniform_val": uniform_val, "soup": soup,
            "training": training}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for models and search output")
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    ap.add_argument("--results", type=Path, default=None,
                    help="where to write RESULTS.json (default: next to this script unless --quick)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="run only these training seeds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # One thread: on a shared 2-core machine torch's spinning threads ran up to 10x slower.
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    args.work.mkdir(parents=True, exist_ok=True)
    t0, timings = time.time(), {}
    val_file = write_tasks(args.work / "val.jsonl", "val", cfg.val_items, EVAL_SEED)
    test_file = write_tasks(args.work / "test.jsonl", "test", cfg.test_items, EVAL_SEED)
    seeds = {str(s): run_seed(s, cfg, args.work, val_file, test_file, timings) for s in cfg.seeds}
    timings["total"] = round(time.time() - t0, 1)
    summary = {"study": "homogeneous", "quick": args.quick, "config": asdict(cfg), "skills": list(SKILLS),
               "test_items": {s: len(sample(s, "test", cfg.test_items, EVAL_SEED)) for s in SKILLS},
               "seeds": seeds, "timings_s": timings, "command": " ".join(["python", *sys.argv]),
               "machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}}
    (args.work / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    results = args.results or (None if args.quick else HERE / "RESULTS.json")
    if results:
        results.write_text(json.dumps(summary, indent=1) + "\n")
        log.info("wrote %s", results)
    # The composite chains step by step (what exact match cannot show); same layout, same items.
    write_steps(args.work, results.with_name("STEPS.json") if results else None)
    log.info("done in %.0fs", timings["total"])


if __name__ == "__main__":
    main()
