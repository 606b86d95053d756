"""The small-scale study: does a layer-wise searched merge of an addition expert and a
multiplication expert do better than a uniform TIES merge, and does either solve composite
problems (a*b+c) that need both skills?

    python examples/small_scale/run_study.py --work /tmp/small_scale      # ~10-20 min on 2 CPU cores
    python examples/small_scale/run_study.py --work /tmp/ss_quick --quick  # a 1-2 minute smoke run

Steps: char tokenizer → tiny Llama pre-trained on mixed arithmetic (add, mul, composite) →
two experts fine-tuned from it (add only, mul only) → uniform TIES merge (`run_merge`) →
layer-wise CMA-ES search of per-layer weights and densities on a validation split
(`run_search`) → every model evaluated on held-out test problems (`evaluate`) → RESULTS.md.
Train, validation and test problems are disjoint (see data.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import training_text, write_tasks
from train import ModelSpec, TrainSpec, init_model, make_char_tokenizer, train

from merge.eval import evaluate, load_model, load_tasks
from merge.executor import run_merge
from merge.recipe import load_recipe
from merge.search import SearchConfig, run_search

log = logging.getLogger("study")
HERE = Path(__file__).resolve().parent
SKILLS = ("add", "mul", "composite")

FULL = {"base_steps": 800, "expert_steps": 400, "base_mix": {"add": 20000, "mul": 20000, "composite": 20000},
        "expert_lr": 2.5e-4, "val_items": 80, "test_items": 80, "budget": 100, "group_size": 1}
QUICK = {"base_steps": 60, "expert_steps": 30, "base_mix": {"add": 2000, "mul": 2000, "composite": 2000},
         "expert_lr": 1e-3, "val_items": 8, "test_items": 10, "budget": 4, "group_size": 2}


def recipe_for(base: Path, add: Path, mul: Path, normalize: bool) -> dict:
    """Uniform TIES: equal weights and densities for both experts. With `normalize` (mergekit's
    default) the agreeing deltas are averaged, so weights only set the experts' ratio; without
    it weights scale the task vectors, so the search can also move back toward the base."""
    return {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
            "parameters": {"normalize": normalize},
            "models": [{"model": str(add), "parameters": {"weight": 0.5, "density": 0.5}},
                       {"model": str(mul), "parameters": {"weight": 0.5, "density": 0.5}}]}


def cached_train(src: Path, dst: Path, lines, spec: TrainSpec, key: dict) -> dict:
    """Train unless `dst` already holds a model trained from the same settings (training is
    deterministic single-threaded, so a rerun would produce the same weights)."""
    marker = dst / "trained.json"
    want = {**key, "spec": spec.__dict__}
    if marker.is_file() and json.loads(marker.read_text()).get("key") == want:
        log.info("reusing %s", dst)
        return json.loads(marker.read_text())["stats"]
    stats = train(src, dst, lines(), spec)
    marker.write_text(json.dumps({"key": want, "stats": stats}))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for models and search output")
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=None, help="where to write RESULTS.md (default: next to "
                    "this script unless --quick)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # One thread: on a shared 2-core machine, torch's two spinning threads ran up to 10x slower.
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    work, seed = args.work, args.seed
    work.mkdir(parents=True, exist_ok=True)
    timings, t0 = {}, time.time()

    def phase(name: str, start: float) -> None:
        timings[name] = round(time.time() - start, 1)
        log.info("%s took %.1fs", name, timings[name])

    t = time.time()
    tok = make_char_tokenizer(work / "tokenizer")
    init = init_model(work / "init", tok, ModelSpec(), seed)
    base_stats = cached_train(init, work / "base", lambda: training_text(cfg["base_mix"], seed),
                              TrainSpec(steps=cfg["base_steps"], seed=seed), {"mix": cfg["base_mix"]})
    phase("train base", t)
    experts, expert_stats = {}, {}
    for skill in ("add", "mul"):
        t = time.time()
        experts[skill] = work / f"expert_{skill}"
        expert_stats[skill] = cached_train(
            work / "base", experts[skill], lambda skill=skill: training_text({skill: 30000}, seed + 1),
            TrainSpec(steps=cfg["expert_steps"], lr=cfg["expert_lr"], warmup=20, seed=seed + 1),
            {"skill": skill, "base": base_stats})
        phase(f"fine-tune {skill} expert", t)
    val = write_tasks(work / "val.jsonl", "val", cfg["val_items"], seed)
    test = write_tasks(work / "test.jsonl", "test", cfg["test_items"], seed)

    t = time.time()
    uniform = {}
    for normalize in (True, False):
        recipe = load_recipe(recipe_for(work / "base", experts["add"], experts["mul"], normalize))
        uniform[normalize] = work / f"uniform_normalize_{str(normalize).lower()}"
        (work / f"{uniform[normalize].name}.yaml").write_text(recipe.to_yaml())
        shutil.rmtree(uniform[normalize], ignore_errors=True)
        run_merge(recipe, uniform[normalize], device="cpu")
    phase("uniform TIES merges", t)

    t = time.time()
    shutil.rmtree(work / "search", ignore_errors=True)
    search = run_search(recipe, load_tasks(val), work / "search",  # starts from normalize: false
                        SearchConfig(budget=cfg["budget"], group_size=cfg["group_size"], seed=seed),
                        device=torch.device("cpu"))
    phase(f"search ({search.evaluations} evaluations)", t)

    t = time.time()
    models = {"base": work / "base", "add expert": experts["add"], "mul expert": experts["mul"],
              "uniform TIES (normalize: true)": uniform[True],
              "uniform TIES (normalize: false) = search start": uniform[False],
              "searched merge": work / "search" / "model"}
    tasks = load_tasks(test)
    scores = {}
    for name, path in models.items():
        model, tokenizer = load_model(path)
        scores[name] = evaluate(model, tokenizer, tasks).to_dict()
        log.info("%s: %s", name, scores[name])
    phase("test evaluation", t)
    timings["total"] = round(time.time() - t0, 1)
    summary = {"config": cfg, "seed": seed, "scores": scores, "timings_s": timings,
               "search": {"start_val_accuracy": search.start["accuracy"], "best_val_accuracy": search.best["accuracy"],
                          "best_eval": search.best["eval"], "evaluations": search.evaluations,
                          "best_params": search.best["params"]},
               "training": {"base": base_stats, **{f"{k} expert": v for k, v in expert_stats.items()}},
               "machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}}
    (work / "results.json").write_text(json.dumps(summary, indent=2))
    results = args.results or (None if args.quick else HERE / "RESULTS.md")
    table = results_table(scores)
    print(table)
    if results:
        results.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        results.write_text(render(summary, table, " ".join(["python", *sys.argv])))
        log.info("wrote %s", results)


def render(summary: dict, table: str, command: str) -> str:
    """RESULTS.md: the table, how to reproduce it, settings, timings (the reading is added below it)."""
    cfg, tm, s = summary["config"], summary["timings_s"], summary["search"]
    timing = "\n".join(f"| {k} | {v} |" for k, v in tm.items())
    trained = "\n".join(f"| {k} | {v['steps']} | {v['final_loss']:.3f} | {v['seconds']} |"
                         for k, v in summary["training"].items())
    return f"""# Small-scale study: layer-wise merge search on arithmetic experts

Test accuracy (exact match; held-out problems never seen in training or search):

{table}

Search (CMA-ES on the validation split): uniform start {s['start_val_accuracy']:.3f} →
best {s['best_val_accuracy']:.3f} (evaluation {s['best_eval']} of {s['evaluations']}).

## Reproduce

```
{command}
```

Seed {summary['seed']} (model init, data sampling, CMA-ES). Settings: `{json.dumps(cfg)}`.
Full numbers, training losses and the searched per-layer parameters: `RESULTS.json`.

## Timings (seconds, {summary['machine']['threads']} torch thread, shared 2-core CPU)

| phase | s |
|---|---|
{timing}

Training as measured when each model was trained (a rerun with the same settings reuses a model
folder whose `trained.json` matches; training is deterministic single-threaded):

| model | steps | final loss | s |
|---|---|---|---|
{trained}
"""


def results_table(scores: dict[str, dict]) -> str:
    rows = ["| model | add | mul | composite (a*b+c) | overall |", "|---|---|---|---|---|"]
    for name, s in scores.items():
        cells = [f"{s['tasks'].get(k, float('nan')):.3f}" for k in SKILLS]
        rows.append(f"| {name} | {' | '.join(cells)} | {s['accuracy']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
