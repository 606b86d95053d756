"""CLI: `mergenet merge RECIPE.yaml -o OUT` — run a homogeneous merge locally.

Models named by id (or an unambiguous prefix) are materialized from the local registry by
`node.ops`, which also signs and registers the output with `--submit`: its provenance records
the recipe as written and each input by model id, or by weight digests for unsigned folders.
Hugging Face names (`org/name[@revision]`) are read from the local Hugging Face cache.

mergekit-yaml's options that people paste along with a recipe work too: `--out-shard-size 1B`
(its K/M/B counts), `--random-seed N` (recorded in the recipe's parameters), `--cuda`, and
`--no-copy-tokenizer` (no tokenizer files, unless the recipe builds a tokenizer), and
`--lazy-unpickle`, `--low-cpu-memory`, which change nothing here (nothing is ever unpickled,
tensors always stream).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from node.cli.context import Context

SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
KMB_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}  # mergekit's parse_kmb: B is a billion
MERGEKIT_NO_OPS = ("--lazy-unpickle", "--low-cpu-memory")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `merge` to the parser."""
    p = sub.add_parser("merge", parents=[common], help="run a merge locally from a mergekit-style recipe")
    p.add_argument("recipe", type=Path, help="recipe YAML (merge_method, base_model, models/slices, parameters)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to compute (default auto: CUDA when available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="dtype of the written weights (default: the recipe's out_dtype, else dtype, else the inputs')")
    p.add_argument("--shard-size", default="5GB", type=parse_size,
                   help="largest output shard, e.g. 2GB or 500MB (default 5GB)")
    p.add_argument("--out-shard-size", dest="shard_size", type=parse_kmb,
                   help="as mergekit-yaml writes it: bytes with K/M/B for thousand/million/billion (5B = 5GB)")
    p.add_argument("--random-seed", type=int, default=None,
                   help="seed of randomized methods (dare_*, della*); written into the recipe's parameters")
    p.add_argument("--cuda", dest="device", action="store_const", const="cuda", help="same as --device cuda")
    p.add_argument("--copy-tokenizer", action=argparse.BooleanOptionalAction, default=True,
                   help="write the tokenizer beside the weights (default); --no-copy-tokenizer leaves it out "
                        "unless the recipe builds one (tokenizer_source or tokenizer:)")
    for flag in MERGEKIT_NO_OPS:
        p.add_argument(flag, action="store_true", help="accepted for mergekit-yaml compatibility; no effect")
    p.add_argument("--submit", action="store_true", help="sign and register the output as a merged model")
    p.set_defaults(func=run_merge_cmd)


def parse_size(text: str) -> int:
    """'2GB' → 2·10⁹ bytes (decimal units as Hugging Face uses; KiB/MiB/GiB are binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m[2].upper() if m else ""
    if not m or unit not in SIZE_UNITS or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; use a number with an optional unit like 2GB or 500MB")
    return int(float(m[1]) * SIZE_UNITS[unit])


def parse_kmb(text: str) -> int:
    """mergekit's sizes: '1B' → 10⁹ bytes, '500M' → 5·10⁸, plain digits as they are."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMbB]?)\s*", text)
    if not m or int(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; use a number with K, M or B, like 1B or 500M")
    return int(m[1]) * KMB_UNITS[m[2].upper()]


def run_merge_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from merge.executor import check_out_dir, recipe_summary
    from merge.recipe import load_recipe
    from node.ops.inputs import InputResolver, registry_fetch
    from node.ops.producing import Submission, merge_and_submit
    from registry.local import LocalRegistry

    recipe = load_recipe(args.recipe)
    if args.random_seed is not None:
        recipe = dataclasses.replace(recipe, parameters={**recipe.parameters, "random_seed": args.random_seed})
    check_out_dir(args.out)  # before anything is materialized
    registry = LocalRegistry(ctx.home)
    scratch = Path(tempfile.mkdtemp(prefix="merge-inputs-", dir=registry.home.tmp_dir))
    try:
        resolver = InputResolver(registry_fetch(registry, ctx.note), scratch, resolve_prefix=registry.resolve)
        with ctx.progress("merge", unit="tensor") as bar:
            made = merge_and_submit(recipe, args.out, resolver, registry=registry,
                                    submit=Submission() if args.submit else None, device=args.device,
                                    out_dtype=args.dtype, shard_size=args.shard_size, progress=bar,
                                    copy_tokenizer=args.copy_tokenizer)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        registry.close()
    result = made.result
    doc: dict[str, Any] = recipe_summary(result)
    text = (f"merged {result.n_tensors} tensors ({recipe.merge_method}) into {result.out_dir}: "
            f"{result.bytes_written / 1e6:.1f} MB in {result.seconds:.1f}s on {result.device}")
    if made.record is not None:
        doc["id"] = made.record.id
        text += f"\nregistered as {made.record.id}"
    ctx.emit(doc, text)
    return 0
