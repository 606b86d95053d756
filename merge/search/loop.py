"""The CMA-ES loop: uniform start first, then seeded CMA-ES generations until the budget is
spent; every evaluation is logged; the best candidate is written as a recipe and a model.

    result = run_search(recipe, tasks, Path("out"), SearchConfig(budget=40, seed=0))

Outputs in `out_dir`: `log.jsonl` (header + every evaluation), `best.yaml` (per-layer lists;
reproduces the best model through `mergenet merge`), `model/` (written by the executor, a
normal HF folder), `fitness.png`. With `resume=True` the log is replayed through a freshly
seeded optimizer (CMA-ES is deterministic given its seed and the fitness values it was told),
so an interrupted search continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from merge.errors import MergeError, MergeInputError
from merge.eval import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, EvalResult, Task, evaluate
from merge.recipe import Recipe
from merge.search.candidate import CandidateMerger
from merge.search.genome import SearchSpace
from merge.search.plot import plot_fitness
from merge.search.runlog import append, read_log, write_header

log = logging.getLogger(__name__)

DEFAULT_SIGMA = 0.2  # initial CMA-ES step in the normalized [0, 1] gene space
REPLAY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SearchConfig:
    """`population` None → cmaes' default 4 + ⌊3 ln d⌋; bounds override genome.py's defaults."""

    budget: int
    group_size: int = 1
    seed: int = 0
    sigma: float = DEFAULT_SIGMA
    population: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    best_recipe: Recipe
    best: dict[str, Any]   # the best evaluation's log record
    start: dict[str, Any]  # the uniform starting point's record
    evaluations: int
    out_dir: Path


def _check_out(out_dir: Path, resume: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()) and not resume:
        raise MergeInputError(f"output folder {out_dir} already exists and is not empty; "
                              "choose another -o, or pass --resume to continue the search logged there")


def run_search(recipe: Recipe, tasks: Sequence[Task], out_dir: Path, config: SearchConfig, *,
               device, resume: bool = False, written_refs: Mapping[str, str] | None = None,
               progress: Callable[[int, int], None] | None = None,
               on_eval: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Search `recipe`'s per-layer weights/densities (model refs must be local folders).

    `written_refs` maps those folders back to the references best.yaml should name (ids, paths).
    `on_eval` sees each evaluation record (the CLI shows the best fitness on its bar).
    """
    import cmaes
    import torch

    if config.budget < 1:
        raise MergeInputError("--budget must be at least 1 (the first evaluation is the recipe's own start point)")
    out_dir = Path(out_dir)
    _check_out(out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.jsonl"
    merger = CandidateMerger(recipe, device)
    try:
        space = SearchSpace.from_recipe(recipe, merger.n_layers, config.group_size, config.bounds or None)
        # The log names models as best.yaml does (ids stay ids), so a resumed search whose inputs
        # were materialized into another scratch folder still matches its own log.
        refs = dict(written_refs or {})
        header = {"recipe": recipe.with_models(refs).to_dict(), "dim": space.dim, "n_layers": space.n_layers,
                  "genes": [{**asdict(g), "model": refs.get(g.model, g.model)} for g in space.genes],
                  **asdict(config), "budget": None}
        old_header, replay = read_log(log_path) if resume else (None, [])
        if old_header is not None:
            _check_same_search(old_header, header, log_path)
            # Rewrite what was read, dropping a line torn by the interruption, before appending.
            write_header(log_path, {k: v for k, v in old_header.items() if k != "type"})
            for rec in replay:
                append(log_path, {k: v for k, v in rec.items() if k != "type"})
        else:
            write_header(log_path, header)
            replay = []

        def score(x: list[float], generation: int, index: int) -> dict[str, Any]:
            if index < len(replay):  # already evaluated before the interruption
                rec = replay[index]
                if not np.allclose(rec["x"], x, atol=REPLAY_TOLERANCE, rtol=0):
                    raise MergeError(f"{log_path} evaluation {index} does not match the replayed optimizer; "
                                     "the log belongs to another search — use a new -o without --resume")
                return rec
            started = time.perf_counter()
            # The start is the recipe itself: per-filter values (`[{filter: mlp, value: 0.7},
            # {value: 0.4}]`) have no gene, so the start genome alone would drop them.
            candidate = recipe if index == 0 else space.to_recipe(x)
            lists = space.start_params() if index == 0 else space.layer_lists(x)
            params = {refs.get(m, m): p for m, p in lists.items()}
            with torch.no_grad():
                model = merger.build(candidate)
                result: EvalResult = evaluate(model, merger.tokenizer, tasks, device=device,
                                              batch_size=config.batch_size, max_new_tokens=config.max_new_tokens)
            rec = {"eval": index, "generation": generation, "x": [float(v) for v in x],
                   "params": params,
                   "fitness": result.fitness, "accuracy": result.accuracy,
                   "tasks": result.tasks, "loglik": result.loglik, "n": result.n,
                   "seconds": round(time.perf_counter() - started, 3)}
            append(log_path, rec)
            return rec

        records: list[dict[str, Any]] = []

        def record(rec: dict[str, Any]) -> None:
            records.append(rec)
            if on_eval:
                on_eval({**rec, "best_fitness": max(r["fitness"] for r in records)})
            if progress:
                progress(len(records), config.budget)

        record(score(space.start(), -1, 0))
        optimizer = cmaes.CMA(mean=np.array(space.start(), dtype=float), sigma=config.sigma,
                              bounds=np.array([[0.0, 1.0]] * space.dim), seed=config.seed,
                              population_size=config.population)
        generation = 0
        while len(records) < config.budget:
            xs = [optimizer.ask() for _ in range(optimizer.population_size)]
            told = []
            for x in xs:
                if len(records) >= config.budget:
                    break
                rec = score([float(v) for v in x], generation, len(records))
                record(rec)
                told.append((x, -rec["fitness"]))  # cmaes minimizes
            if len(told) == optimizer.population_size:
                optimizer.tell(told)
            generation += 1
        # The earliest of equally fit candidates wins, so the uniform start is kept unless beaten.
        best = max(records, key=lambda r: (r["fitness"], -r["eval"]))
        best_recipe = recipe if best["eval"] == 0 else space.to_recipe(best["x"])
        _write_outputs(out_dir, best_recipe, records, written_refs, device)
        return SearchResult(best_recipe.with_models(written_refs or {}), best, records[0], len(records), out_dir)
    finally:
        merger.close()


def _check_same_search(old: dict[str, Any], new: dict[str, Any], log_path: Path) -> None:
    for key in ("recipe", "genes", "seed", "sigma", "population", "group_size", "batch_size", "max_new_tokens"):
        if old.get(key) != new.get(key):
            raise MergeInputError(f"{log_path} was written by a search with a different {key}; "
                                  "resume with the same recipe and options, or use a new -o")


def _write_outputs(out_dir: Path, best_recipe: Recipe, records: list[dict[str, Any]],
                   written_refs: Mapping[str, str] | None, device) -> None:
    from merge.executor import run_merge

    (out_dir / "best.yaml").write_text(best_recipe.with_models(written_refs or {}).to_yaml())
    model_dir = out_dir / "model"
    if model_dir.exists():  # left by an earlier (resumed) run of this same search
        shutil.rmtree(model_dir)
    run_merge(best_recipe, model_dir, device=str(device), card_recipe=best_recipe.with_models(written_refs or {}))
    plot_fitness(records, out_dir / "fitness.png")
    log.info("best fitness %.4f (eval %d) of %d evaluations", max(r["fitness"] for r in records),
             max(records, key=lambda r: r["fitness"])["eval"], len(records))


