"""CLI commands `eval` (accuracy of a model on a task file) and `search` (layer-wise
evolutionary search of merge parameters). Heavy imports happen inside the handlers.

To use lm-evaluation-harness instead of the built-in scorer on a model folder (or on a
search's OUT/model): `lm_eval --model hf --model_args pretrained=PATH,dtype=float32 --tasks
TASK --device cpu`; any folder mergenet writes is a plain Hugging Face model folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LM_EVAL_HINT = (
    "Prefer lm-evaluation-harness for standard benchmarks? Every mergenet model folder is a plain "
    "HF folder: lm_eval --model hf --model_args pretrained=MODEL_DIR --tasks TASK"
)


@contextmanager
def resolver(ctx) -> Iterator:
    """An InputResolver over the local registry, with a scratch folder removed afterwards; paths are
    made absolute (so best.yaml works from any directory)."""
    from node.ops.inputs import InputResolver, registry_fetch
    from registry.local import LocalRegistry

    path = Path(tempfile.mkdtemp(prefix="mergenet-search-inputs-"))
    registry = LocalRegistry(ctx.home)
    try:
        yield InputResolver(registry_fetch(registry, ctx.note), path, resolve_prefix=registry.resolve)
    finally:
        registry.close()
        shutil.rmtree(path, ignore_errors=True)


def cmd_eval(args: argparse.Namespace, ctx) -> int:
    from merge.device import pick_device
    from merge.eval import evaluate, load_model, load_tasks

    tasks = load_tasks(args.tasks)
    device = pick_device(args.device)
    with resolver(ctx) as inputs:
        model, tok = load_model(inputs.folder(args.model), device)
    with ctx.progress("eval", unit="item") as progress:
        result = evaluate(model, tok, tasks, device=device, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, progress=progress)
    lines = [f"accuracy {result.accuracy:.4f} on {result.n} items"]
    lines += [f"  {name}: {acc:.4f}" for name, acc in result.tasks.items()]
    ctx.emit(result.to_dict(), "\n".join(lines))
    return 0


def cmd_search(args: argparse.Namespace, ctx) -> int:
    from tqdm import tqdm

    from merge.device import pick_device
    from merge.eval import load_tasks
    from merge.recipe import load_recipe
    from merge.search import SearchConfig, run_search

    recipe = load_recipe(args.recipe)
    tasks = load_tasks(args.eval)
    device = pick_device(args.device)
    config = SearchConfig(budget=args.budget, group_size=args.group_size, seed=args.seed, sigma=args.sigma,
                          population=args.population, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens,
                          bounds={k: v for k, v in (("weight", args.weight_bounds),
                                                    ("density", args.density_bounds)) if v})
    bar = tqdm(total=args.budget, desc="search", unit="eval", file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=not sys.stderr.isatty() or os.environ.get("MERGENET_NO_PROGRESS") == "1")

    def on_eval(rec: dict) -> None:
        bar.set_postfix(best=f"{rec['best_fitness']:.4f}", last=f"{rec['accuracy']:.3f}", refresh=False)
        bar.n = rec["eval"] + 1
        bar.refresh()

    with resolver(ctx) as inputs:
        mapping = inputs.folders(recipe.model_refs())
        written = {local: (ref if inputs.model_id(ref) else local) for ref, local in mapping.items()}
        try:
            result = run_search(recipe.with_models(mapping), tasks, args.out, config, device=device,
                                resume=args.resume, written_refs=written, on_eval=on_eval)
        finally:
            bar.close()
    best, start = result.best, result.start
    doc = {"out": str(result.out_dir), "evaluations": result.evaluations,
           "best": {"eval": best["eval"], "fitness": best["fitness"], "accuracy": best["accuracy"],
                    "tasks": best["tasks"]},
           "start": {"fitness": start["fitness"], "accuracy": start["accuracy"], "tasks": start["tasks"]},
           "files": {name: str(result.out_dir / name) for name in ("model", "best.yaml", "log.jsonl", "fitness.png")}}
    text = (f"searched {result.evaluations} candidates: best accuracy {best['accuracy']:.4f} (evaluation "
            f"{best['eval']}), uniform start {start['accuracy']:.4f}\n"
            f"best recipe {result.out_dir / 'best.yaml'}, model {result.out_dir / 'model'}")
    ctx.emit(doc, text)
    return 0


def _bounds(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text}") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"expected LOW < HIGH, got {text}")
    return low, high


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `eval` and `search` to the parser."""
    p = sub.add_parser("eval", parents=[common], help="exact-match / multiple-choice accuracy on a task file",
                       epilog=LM_EVAL_HINT)
    p.add_argument("model", metavar="MODEL_DIR_OR_ID", help="model folder, or sha256: id in the local registry")
    p.add_argument("--tasks", required=True, metavar="TASKS.jsonl", help="JSONL task file (see CLI.md)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--max-new-tokens", type=_positive, default=16, help="cap on generated tokens per item")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("search", parents=[common], help="layer-wise evolutionary (CMA-ES) search of merge parameters",
                       description="Search per-layer-group weights (and densities, when the method has them) "
                       "of a recipe's models with CMA-ES; the first evaluation is the recipe as written.")
    p.add_argument("recipe", type=Path, metavar="RECIPE.yaml", help="starting recipe with a 'models' list")
    p.add_argument("--eval", required=True, metavar="TASKS.jsonl", help="task file the fitness is measured on")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder: model/, best.yaml, log.jsonl, "
                   "fitness.png")
    p.add_argument("--budget", type=_positive, default=50, help="number of evaluations, the start included "
                   "(default 50)")
    p.add_argument("--group-size", type=_positive, default=1, help="layers per gene group (default 1)")
    p.add_argument("--seed", type=int, default=0, help="CMA-ES seed (default 0)")
    p.add_argument("--sigma", type=float, default=0.2, help="initial CMA-ES step in normalized gene space "
                   "(default 0.2)")
    p.add_argument("--population", type=_positive, default=None, help="CMA-ES population (default 4+3ln(genes))")
    p.add_argument("--weight-bounds", type=_bounds, default=None, metavar="LOW,HIGH",
                   help="weight gene bounds (default 0,1, widened to include the recipe's values)")
    p.add_argument("--density-bounds", type=_bounds, default=None, metavar="LOW,HIGH",
                   help="density gene bounds (default 0.1,1, widened to include the recipe's values)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--max-new-tokens", type=_positive, default=16)
    p.add_argument("--resume", action="store_true", help="continue the search logged in OUT/log.jsonl")
    p.set_defaults(func=cmd_search)
