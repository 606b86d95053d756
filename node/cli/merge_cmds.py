"""CLI: `mergenet merge RECIPE.yaml -o OUT` — run a homogeneous merge locally.

Models named by `sha256:` id are materialized from the local registry into a scratch folder
first (merge/ itself only knows paths); `--submit` signs and registers the output as a merged
model whose provenance records the recipe as written and the input ids.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from node.cli.context import Context

ID_PREFIX = "sha256:"
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


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
    p.add_argument("--submit", action="store_true", help="sign and register the output as a merged model")
    p.set_defaults(func=run_merge_cmd)


def parse_size(text: str) -> int:
    """'2GB' → 2·10⁹ bytes (decimal units as Hugging Face uses; KiB/MiB/GiB are binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m[2].upper() if m else ""
    if not m or unit not in SIZE_UNITS or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; use a number with an optional unit like 2GB or 500MB")
    return int(float(m[1]) * SIZE_UNITS[unit])


def run_merge_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from merge.executor import recipe_summary, run_merge
    from merge.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    ids = [ref for ref in recipe.model_refs() if ref.startswith(ID_PREFIX)]
    scratch = None
    try:
        runnable, inputs = recipe, {}
        if ids:
            reg = _registry(ctx)
            scratch = Path(tempfile.mkdtemp(prefix="merge-inputs-", dir=reg.home.tmp_dir))
            mapping = {}
            for ref in ids:
                model_id = reg.resolve(ref)
                ctx.note(f"materializing {model_id[:23]}… from the local registry")
                mapping[ref] = str(reg.materialize(model_id, scratch / model_id.removeprefix(ID_PREFIX)[:16]))
                inputs[ref] = model_id
            runnable = recipe.with_models(mapping)
        # Local inputs are hashed while the merge runs; the card waits for the digests.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="input-digests") as pool:
            local = pool.submit(_identify_local_inputs, ctx, recipe, set(ids))

            def identities() -> dict[str, str]:
                inputs.update(local.result())
                return inputs

            with ctx.progress("merge", unit="tensor") as bar:
                result = run_merge(runnable, args.out, device=args.device, out_dtype=args.dtype,
                                   shard_size=args.shard_size, progress=bar, inputs=identities,
                                   card_recipe=recipe, version=_version())
            identities()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    doc: dict[str, Any] = recipe_summary(result)
    text = (f"merged {result.n_tensors} tensors ({recipe.merge_method}) into {result.out_dir}: "
            f"{result.bytes_written / 1e6:.1f} MB in {result.seconds:.1f}s on {result.device}")
    if args.submit:
        record = _registry(ctx).submit(result.out_dir, kind="merged",
                                       provenance=_provenance(recipe, result.device, inputs))
        doc["id"] = record.id
        text += f"\nregistered as {record.id}"
    ctx.emit(doc, text)
    return 0


def _registry(ctx: Context) -> Any:
    from registry.local import LocalRegistry

    return LocalRegistry(ctx.home)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mergenet")
    except metadata.PackageNotFoundError:
        return "unknown"


def _provenance(recipe: Any, device: str, identities: dict[str, str]) -> dict[str, Any]:
    """Inputs by model id where one is known (an id in the recipe, or a signed folder), else by path."""
    roles = []
    for ref in recipe.model_refs():
        role = "base" if ref == recipe.base_model else "tokenizer" if ref == recipe.tokenizer_source else "expert"
        ident = identities.get(ref, "")
        roles.append({"role": role, "ref": ref, "id": ident if ident.startswith(ID_PREFIX) else None,
                      **({"digests": ident} if ident and not ident.startswith(ID_PREFIX) else {})})
    return {"method": recipe.merge_method, "recipe": recipe.to_dict(),
            "inputs": [r["id"] or r["ref"] for r in roles], "input_roles": roles,
            "mergenet_version": _version(), "device": device}


def _identify_local_inputs(ctx: Context, recipe: Any, skip: set[str]) -> dict[str, str]:
    """What the model card and provenance record for local folder inputs: the verified model id of
    a signed folder, else the sha256 of each weight file (so the card names exact bytes)."""
    from registry.errors import RegistryError
    from registry.hashing import hash_files

    found, unsigned = {}, {}
    for ref in recipe.model_refs():
        folder = Path(ref)
        if ref in skip or ref in found or not folder.is_dir():
            continue
        if (folder / "model.sig").is_file():
            try:
                found[ref] = _registry(ctx).verify(ref).id
                continue
            except RegistryError as exc:
                ctx.note(f"{ref}: not recording its signature ({exc}); recording file digests instead")
        unsigned.update({(ref, p.name): p for p in sorted(folder.glob("*.safetensors"))})
    # One call, so that the files of every unsigned input are hashed in parallel.
    digests = hash_files({f"{i}/{name}": path for i, ((_, name), path) in enumerate(unsigned.items())})
    for i, (ref, name) in enumerate(unsigned):
        entry = f"{name} sha256:{digests[f'{i}/{name}'].sha256}"
        found[ref] = f"{found[ref]}, {entry}" if ref in found else entry
    return found
