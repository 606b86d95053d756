"""The fusion engine's entry point: recipe + paths in, a trained HF folder out.

    result = run_fusion(load_recipe("fuse.yaml"), Path("out"), device="auto")

Steps (each saved in the work dir under a key of its inputs, and skipped on a rerun when present):
capture every model → align each source to the target → fuse → train the target (per-epoch
checkpoints). The output folder appears atomically (temp dir + rename) with a model card that
records the sources, the data's sha256 and the settings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import merge.fusion.capture as cap_mod
from merge.device import pick_device
from merge.errors import MergeInputError
from merge.fusion.align import Projected, build_vocab_map, identity_projection, project_capture, vocab_strings
from merge.fusion.card import model_card
from merge.fusion.data import Example, file_sha256, load_examples
from merge.fusion.fuse import FUSION_FUNCTIONS, Fused, fuse, row_sequence_index
from merge.fusion.recipe import FusionRecipe, load_recipe
from merge.fusion.store import load_tensors, model_fingerprint, read_meta, save_tensors, step_key
from merge.fusion.train import Metrics, TrainSettings, train_target

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when a step's saved output changes meaning, so old work dirs are not reused
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FusionResult:
    out_dir: Path
    device: str
    target: str
    sources: tuple[str, ...]
    data_sha256: str
    examples: int
    aligned_fraction: tuple[float, ...]  # per source: target tokens that got its distribution
    mean_weights: tuple[float, ...]  # per candidate (target, then sources): mean fusion weight
    before: Metrics
    after: Metrics
    steps: int
    train_tokens_per_s: float
    reused: tuple[str, ...]  # steps taken from the work dir instead of recomputed

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


def default_work_dir(out_dir: Path) -> Path:
    """Where step outputs go when no work dir is given: next to the output, so a rerun of the same
    command after a crash finds them; removed once the output exists."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f".{out_dir.name}.fusion-work"


def run_fusion(recipe: FusionRecipe | Mapping[str, Any] | str | Path, out_dir: Path, *, device: str = "auto",
               work_dir: Path | None = None, progress: Progress | None = None,
               resolve: Callable[[str], Path] | None = None, version: str = "",
               license: str | None = None) -> FusionResult:
    """Run a whole fusion. `work_dir` keeps step outputs for restarts (default: `default_work_dir`,
    removed after success; an explicit one is kept). `resolve` turns each model reference into a
    folder (default: a path, relative to the recipe's folder); merge/ treats references as opaque
    names, so registry ids are the caller's to resolve. The model card and result keep the
    references as written and name mergenet `version` and the `license` (SPDX) when given."""
    recipe = recipe if isinstance(recipe, FusionRecipe) else load_recipe(recipe)
    out_dir = Path(out_dir).resolve()
    check_out_dir(out_dir)
    dev = str(pick_device(device, recipe.device))
    examples = load_examples(Path(recipe.data))
    digest = file_sha256(Path(recipe.data))
    paths = {ref: _model_path(resolve(ref) if resolve is not None else recipe.local_path(ref))
             for ref in recipe.model_refs()}  # may materialize: after cheap checks
    models = [paths[recipe.target], *(paths[s] for s in recipe.sources)]
    keep_work = work_dir is not None
    work = Path(work_dir) if work_dir is not None else default_work_dir(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    n = len(examples)
    train_steps = recipe.epochs * -(-n // recipe.batch_size)
    tracker = _Tracker(progress, total=(2 * len(models) - 1) * n + train_steps)
    reused: list[str] = []

    captures, cap_keys = _capture_step(recipe, models, examples, digest, work, dev, tracker, reused)
    target_tok = cap_mod.load_tokenizer(models[0])
    # Only ids the target's embedding has may receive mass (a tokenizer can hold more added tokens).
    target_vocab = vocab_strings(target_tok)[:_config_vocab_size(models[0]) or None]
    projections, align_keys = _align_step(models, captures, cap_keys, target_vocab, work, tracker, reused)
    fuse_key = step_key({"v": FORMAT_VERSION, "step": "fuse", "inputs": [cap_keys[0], *align_keys],
                         "ce": cap_keys, "fusion": recipe.fusion})
    fused = _fuse_step(recipe, captures, projections, work / "fused.safetensors", fuse_key, reused)

    settings = TrainSettings(lr=recipe.lr, epochs=recipe.epochs, batch_size=recipe.batch_size,
                             lm_loss_weight=recipe.lm_loss_weight, seed=recipe.seed)
    train_key = step_key({"v": FORMAT_VERSION, "step": "train", "fused": fuse_key, "target": cap_keys[0],
                          "settings": asdict(settings)})
    model, outcome = train_target(models[0], captures[0], fused, settings, work / "train", train_key, dev,
                                  progress=tracker.stage(train_steps))
    if outcome.resumed_from_epoch:
        reused.append(f"train-epochs-{outcome.resumed_from_epoch}")

    total_rows = max(int(captures[0].topk_ids.shape[0]), 1)
    result = FusionResult(
        out_dir=out_dir, device=dev, target=recipe.target, sources=recipe.sources, data_sha256=digest,
        examples=n, aligned_fraction=tuple(p.aligned / total_rows for p in projections[1:]),
        mean_weights=tuple(float(w) for w in fused.weights.mean(dim=0)), before=outcome.before,
        after=outcome.after, steps=outcome.steps, train_tokens_per_s=outcome.tokens_per_s, reused=tuple(reused),
    )
    _write_output(model, target_tok, recipe, result, out_dir, version, license)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _capture_step(recipe: FusionRecipe, models: list[Path], examples: tuple[Example, ...], digest: str, work: Path,
                  dev: str, tracker: _Tracker, reused: list[str]) -> tuple[list[cap_mod.Capture], list[str]]:
    """Step 1 for the target (index 0) and every source."""
    captures, keys = [], []
    for i, model in enumerate(models):
        key = step_key({"v": FORMAT_VERSION, "step": "capture", "model": model_fingerprint(model), "data": digest,
                        "top_k": recipe.top_k, "max_length": recipe.max_length})
        path = work / f"capture-{i}.safetensors"
        cap = cap_mod.load_capture(path, key)
        if cap is None:
            cap = cap_mod.capture_model(model, examples, top_k=recipe.top_k, max_length=recipe.max_length,
                                        batch_size=recipe.batch_size, device=dev, progress=tracker.stage(len(examples)))
            cap_mod.save_capture(cap, path, key)
        else:
            reused.append(f"capture-{i}")
            tracker.skip(len(examples))
        captures.append(cap)
        keys.append(key)
    return captures, keys


def _align_step(models: list[Path], captures: list[cap_mod.Capture], cap_keys: list[str], target_vocab: list[str],
                work: Path, tracker: _Tracker, reused: list[str]) -> tuple[list[Projected], list[str]]:
    """Step 2: every source projected onto the target's tokens; the target's own rows come first."""
    projections: list[Projected] = [identity_projection(captures[0])]
    keys = []
    n = captures[0].n_seqs
    for i in range(1, len(models)):
        key = step_key({"v": FORMAT_VERSION, "step": "align", "source": cap_keys[i], "target": cap_keys[0]})
        path = work / f"align-{i}.safetensors"
        saved, meta = load_tensors(path, key), read_meta(path, key)
        if saved is None or meta is None:
            proj = _align(models[i], captures[i], captures[0], target_vocab, tracker.stage(n))
            save_tensors({"ids": proj.ids, "probs": proj.probs}, path, key, meta={"aligned": proj.aligned})
        else:
            proj = Projected(ids=saved["ids"], probs=saved["probs"], aligned=int(meta["aligned"]))
            reused.append(f"align-{i}")
            tracker.skip(n)
        projections.append(proj)
        keys.append(key)
    return projections, keys


def _fuse_step(recipe: FusionRecipe, captures: list[cap_mod.Capture], projections: list[Projected], path: Path,
               key: str, reused: list[str]) -> Fused:
    """Step 3a: per-sequence weights from each candidate's CE on the reference, then the mixture."""
    saved = load_tensors(path, key)
    if saved is not None:
        reused.append("fuse")
        return Fused(**saved)
    ce = torch.stack([c.ce_per_char() for c in captures], dim=1)  # (S, M)
    fused = fuse(projections, FUSION_FUNCTIONS[recipe.fusion](ce), row_sequence_index(captures[0].resp_offsets()))
    save_tensors({"ids": fused.ids, "probs": fused.probs, "weights": fused.weights}, path, key)
    return fused


def _config_vocab_size(model: Path) -> int | None:
    value = json.loads((model / "config.json").read_text()).get("vocab_size")
    return value if isinstance(value, int) and value > 0 else None


def _model_path(path: Path) -> Path:
    path = Path(path)
    cap_mod.check_model_dir(path)
    return path


def check_out_dir(out_dir: Path) -> None:
    """The output must not exist yet, or be an empty folder: a fusion never overwrites anything."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeInputError(f"output folder {out_dir} already exists and is not empty; choose a new -o path")


def _align(model: Path, src: cap_mod.Capture, tgt: cap_mod.Capture, target_vocab: list[str],
           progress: Progress | None) -> Projected:
    src_vocab = vocab_strings(cap_mod.load_tokenizer(model))
    needed = np.unique(np.concatenate([src.topk_ids.flatten().numpy(), src.input_ids.numpy()]))
    vmap = build_vocab_map(src_vocab, target_vocab, needed=needed)
    proj = project_capture(src, tgt, src_vocab, target_vocab, vmap, progress=progress)
    log.info("aligned %s: %d of %d target tokens carry its distribution", model, proj.aligned, tgt.topk_ids.shape[0])
    return proj


def write_model_files(model: Any, tok: Any, folder: Path) -> None:
    """A fused model's weights, config, generation config and tokenizer files: all but its card."""
    model.to("cpu").save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


def expected_model_files(target: Path, folder: Path) -> None:
    """Write into `folder` what `run_fusion` writes beside its card when it trains `target`, with
    the target's untrained weights: training changes tensor values only, so the config,
    generation config and tokenizer bytes and the tensor layout (files, names, dtypes, shapes)
    are those of the fused model. A verifier compares a fused folder with this one."""
    write_model_files(cap_mod.load_model(Path(target), "cpu"), cap_mod.load_tokenizer(Path(target)), folder)


def _write_output(model: Any, tok: Any, recipe: FusionRecipe, result: FusionResult, out_dir: Path,
                  version: str, license: str | None) -> None:
    """Temp folder next to the destination, then one rename: never a half-written visible folder."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        write_model_files(model, tok, tmp)
        (tmp / "README.md").write_text(model_card(recipe, result.to_dict(), version, license), encoding="utf-8")
        # mkdtemp (and some savers) create owner-only modes; a published model is meant to be read.
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.is_dir():
            out_dir.rmdir()  # checked empty up front; a folder that filled since then makes this fail loudly
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Tracker:
    """Turns per-step progress into one `progress(done, total)` over the whole run."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, max(total, 1), 0

    def skip(self, units: int) -> None:
        self.done += units
        if self.progress:
            self.progress(min(self.done, self.total), self.total)

    def stage(self, units: int) -> Progress | None:
        if self.progress is None:
            return None
        start = self.done
        self.done += units

        def report(done: int, total: int) -> None:
            # Training reports absolute steps (a resumed run starts part-way), other steps start at 0.
            self.progress(min(start + done, self.total), self.total)

        return report
