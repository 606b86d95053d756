"""CLI: `mergenet fuse RECIPE.yaml -o OUT` — heterogeneous merging by distribution fusion.

Models named by `sha256:` id are materialized from the local registry first; `--submit` signs
and registers the output as a merged model whose provenance names the target and every source.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli.context import Context

ID_PREFIX = "sha256:"


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

    from merge.fusion import load_recipe, run_fusion
    from merge.fusion.pipeline import default_work_dir

    hf_logging.disable_progress_bar()  # our own bar is the one the user should see
    recipe = load_recipe(args.recipe)
    # Registry ids become verified folders inside the work dir: kept for a resumed run, and removed
    # with the default work dir once the output exists.
    inputs_dir = (args.work_dir or default_work_dir(args.out)) / "inputs"
    registry = _Registry(ctx.home)
    try:
        with ctx.progress("fuse", unit="step") as bar:
            result = run_fusion(recipe, args.out, device=args.device, work_dir=args.work_dir, progress=bar,
                                resolve=lambda ref: _materialize(registry.get(), ref, inputs_dir))
        doc: dict[str, Any] = result.to_dict()
        if args.submit:
            provenance = _provenance(registry.get(), recipe, result)
            doc["id"] = registry.get().submit(result.out_dir, kind="merged", provenance=provenance).id
    finally:
        registry.close()
    text = (f"fused {len(recipe.sources)} source(s) into {result.out_dir}\n"
            f"  LM loss {result.before.lm_loss:.4f} → {result.after.lm_loss:.4f}, "
            f"KL to fused {result.before.fused_kl:.4f} → {result.after.fused_kl:.4f} "
            f"({result.steps} steps on {result.device}, {result.train_tokens_per_s:.0f} tokens/s)")
    if args.submit:
        text += f"\n  registered as {doc['id']}"
    ctx.emit(doc, text)
    return 0


class _Registry:
    """The home's LocalRegistry, opened only if an id must be resolved or the output submitted."""

    def __init__(self, home: Path) -> None:
        self.home, self.registry = home, None

    def get(self) -> Any:
        if self.registry is None:
            from registry.local import LocalRegistry

            self.registry = LocalRegistry(self.home)
        return self.registry

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()


def _materialize(reg: Any, ref: str, inputs_dir: Path) -> Path:
    """A registry id as a verified folder (reused when an earlier run of this work dir made it)."""
    model_id = reg.resolve(ref)
    folder = inputs_dir / model_id.removeprefix(ID_PREFIX)[:16]
    if not folder.is_dir():
        reg.materialize(model_id, folder)
    return folder


def _provenance(reg: Any, recipe: Any, result: Any) -> dict[str, Any]:
    """Inputs are named by model id where one is known (an id in the recipe, or a signed folder),
    else by path; the recipe is recorded exactly as written."""
    from importlib import metadata

    inputs = []
    for role, ref in [("target", recipe.target), *(("source", s) for s in recipe.sources)]:
        inputs.append({"role": role, "ref": ref, "id": _model_id(reg, ref)})
    try:
        version = metadata.version("mergenet")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "method": "fusion", "inputs": [i["id"] or i["ref"] for i in inputs], "input_roles": inputs,
        "recipe": recipe.to_dict(), "data_sha256": result.data_sha256, "device": result.device,
        "mergenet_version": version,
    }


def _model_id(reg: Any, ref: str) -> str | None:
    from registry.errors import RegistryError

    try:
        if ref.startswith(ID_PREFIX):
            return reg.resolve(ref)
        if (Path(ref) / "model.sig").is_file():
            return reg.verify(ref).id
    except RegistryError:
        return None
    return None
