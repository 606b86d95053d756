"""CLI commands `eval` (accuracy of a model on a task file) and `search` (layer-wise
evolutionary search of merge parameters). Heavy imports happen inside the handlers.

To use lm-evaluation-harness instead of the built-in scorer on a model folder (or on a
search's OUT/model): `lm_eval --model hf --model_args pretrained=PATH,dtype=float32 --tasks
TASK --device cpu`; any folder mergenet writes is a plain Hugging Face model folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LM_EVAL_HINT = (
    "Prefer lm-evaluation-harness for standard benchmarks? Every mergenet model folder is a plain "
    "HF folder: lm_eval --model hf --model_args pretrained=MODEL_DIR --tasks TASK"
)


def resolve_model(ref: str, ctx) -> Path:
    """A model folder path, or a `sha256:` id materialized from the local registry."""
    if ref.startswith("sha256:"):
        from registry.local import LocalRegistry

        return Path(LocalRegistry(ctx.home).materialize(ref))
    return Path(ref)


def cmd_eval(args: argparse.Namespace, ctx) -> int:
    from merge.eval import evaluate, load_model, load_tasks, pick_device

    tasks = load_tasks(args.tasks)
    device = pick_device(args.device)
    model, tok = load_model(resolve_model(args.model, ctx), device)
    with ctx.progress("eval", unit="item") as progress:
        result = evaluate(model, tok, tasks, device=device, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, progress=progress)
    lines = [f"accuracy {result.accuracy:.4f} on {result.n} items"]
    lines += [f"  {name}: {acc:.4f}" for name, acc in result.tasks.items()]
    ctx.emit(result.to_dict(), "\n".join(lines))
    return 0


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
