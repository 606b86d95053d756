"""CLI: `mergenet fuse RECIPE.yaml -o OUT` — heterogeneous merging by distribution fusion.

Models named by id are materialized from the local registry by `node.ops`; `--submit` signs and
registers the output as a merged model whose provenance names the target and every source.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli.context import Context


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `fuse` to the parser."""
    p = sub.add_parser("fuse", parents=[common],
                       help="fuse source models of any architecture/tokenizer into a target model")
    p.add_argument("recipe", type=Path, help="fusion recipe (YAML: target, sources, data, top_k, fusion, ...)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (default: the recipe's device, else a GPU when present)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep step outputs here; a rerun with the same folder resumes (default: a temp folder "
                        "next to the output, removed on success)")
    p.add_argument("--submit", action="store_true", help="sign and register the output as a merged model")
    p.set_defaults(func=run_fuse)


def run_fuse(args: argparse.Namespace, ctx: Context) -> int:
    from transformers.utils import logging as hf_logging

    from merge.fusion import load_recipe
    from merge.fusion.pipeline import check_out_dir, default_work_dir
    from node.ops.inputs import InputResolver, registry_fetch
    from node.ops.producing import Submission, fuse_and_submit
    from registry.local import LocalRegistry

    hf_logging.disable_progress_bar()  # our own bar is the one the user should see
    recipe = load_recipe(args.recipe)
    check_out_dir(args.out)
    # Registry ids become verified folders inside the work dir: kept for a resumed run, and removed
    # with the default work dir once the output exists.
    inputs_dir = (args.work_dir or default_work_dir(args.out)) / "inputs"
    registry = LocalRegistry(ctx.home)
    try:
        resolver = InputResolver(registry_fetch(registry), inputs_dir, base_dir=Path(recipe.base_dir),
                                 resolve_prefix=registry.resolve)
        with ctx.progress("fuse", unit="step") as bar:
            made = fuse_and_submit(recipe, args.out, resolver, registry=registry,
                                   submit=Submission() if args.submit else None, device=args.device,
                                   work_dir=args.work_dir, progress=bar)
    finally:
        registry.close()
    result = made.result
    doc: dict[str, Any] = result.to_dict()
    text = (f"fused {len(recipe.sources)} source(s) into {result.out_dir}\n"
            f"  LM loss {result.before.lm_loss:.4f} → {result.after.lm_loss:.4f}, "
            f"KL to fused {result.before.fused_kl:.4f} → {result.after.fused_kl:.4f} "
            f"({result.steps} steps on {result.device}, {result.train_tokens_per_s:.0f} tokens/s)")
    if made.record is not None:
        doc["id"] = made.record.id
        text += f"\n  registered as {doc['id']}"
    ctx.emit(doc, text)
    return 0
