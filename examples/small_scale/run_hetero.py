"""The heterogeneous small-scale study: does distribution fusion (`mergenet fuse`) carry two experts
of different architectures and tokenizers into a third model better than fine-tuning that model
on the same instruction data alone (FuseLLM's control)?

    python examples/small_scale/run_hetero.py --work /tmp/small_scale_hetero        # the full study
    python examples/small_scale/run_hetero.py --work /tmp/ssh_quick --quick         # a smoke run

Per seed: expert A, a Llama with a char tokenizer, trained on addition; expert B, a GPT-2 with a
byte-level BPE tokenizer, trained on multiplication; the target, a Qwen2 with a char tokenizer of
another id layout, pre-trained on the easy cases of both formats (no carries, factors 0
and 1: weak at both skills). Then `run_fusion` (the library call `mergenet fuse` makes) trains the target on
instruction data of both skills: min_ce and avg_ce fusion at λ ∈ {0.5, 0.9}, and λ = 1 (the
fused term switched off: plain
fine-tuning on the same data, same optimizer, same steps) as the control. Every model is scored on
the same held-out test items of both skills (`evaluate`); the response loss is the mean per-token
NLL of the gold test answers. Numbers go to `results.json` (and `RESULTS_hetero.json` here for the
full run); `report.py` makes the tables and plots.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import sample, training_pairs, write_instructions, write_tasks
from run_study import score
from train import ALPHABET, TrainSpec, cached_train, make_char_tokenizer

from merge.eval import load_tasks
from merge.fusion import load_recipe
from merge.fusion.capture import PROMPT_SEPARATOR
from merge.fusion.pipeline import run_fusion
from node.demo.models import TinySpec, make_model, make_tokenizer

log = logging.getLogger("hetero")
HERE = Path(__file__).resolve().parent
SKILLS = ("add", "mul")
EVAL_SEED = 0
CONTROL = "control: target fine-tuned alone (λ = 1)"


@dataclass(frozen=True)
class HeteroConfig:
    seeds: tuple[int, ...]
    model: TinySpec
    pool: int               # training problems per skill
    expert_steps: int
    target_steps: int       # the target's brief pre-training: it knows the formats, weakly
    fusion_examples: int    # instruction examples per skill
    fusion_lr: float
    fusion_epochs: int
    fusion_batch: int
    top_k: int
    test_items: int         # per skill
    eval_batch: int


FULL = HeteroConfig(seeds=(0, 1), model=TinySpec(n_layers=4, hidden=64, heads=4, intermediate=192, max_positions=64),
                    pool=20000, expert_steps=3000, target_steps=600, fusion_examples=2000, fusion_lr=1e-3,
                    fusion_epochs=3, fusion_batch=32, top_k=10, test_items=300, eval_batch=128)
QUICK = HeteroConfig(seeds=(0, 1), model=TinySpec(n_layers=2, hidden=32, heads=4, intermediate=64, max_positions=64),
                     pool=300, expert_steps=20, target_steps=10, fusion_examples=40, fusion_lr=1e-3,
                     fusion_epochs=1, fusion_batch=16, top_k=5, test_items=10, eval_batch=64)


def conditions() -> dict[str, dict]:
    """Fusion settings by name; the control is the same run with the fused term weighted 0."""
    out = {f"{f} λ={lam}": {"fusion": f, "lm_loss_weight": lam} for f in ("min_ce", "avg_ce") for lam in (0.5, 0.9)}
    out[CONTROL] = {"fusion": "min_ce", "lm_loss_weight": 1.0}
    return out


def fuse(recipe: dict, out: Path, work_dir: Path, inputs: dict) -> dict:
    """`run_fusion` unless `out` already holds a fusion of this exact recipe and these input models
    (`inputs`: their training records; the paths stay the same when a model is retrained); the
    step outputs in `work_dir` (captures, alignments) are shared by every condition of a seed."""
    marker = out.with_name(out.name + ".fusion.json")
    if marker.is_file() and (out / "config.json").is_file():
        saved = json.loads(marker.read_text())
        if saved["recipe"] == recipe and saved.get("inputs") == inputs:
            log.info("reusing %s", out)
            return saved["result"]
    shutil.rmtree(out, ignore_errors=True)
    result = run_fusion(load_recipe(recipe), out, device="cpu", work_dir=work_dir).to_dict()
    marker.write_text(json.dumps({"recipe": recipe, "inputs": inputs, "result": result}, default=str))
    return result


def run_seed(seed: int, cfg: HeteroConfig, root: Path, test_file: Path, timings: dict[str, float]) -> dict:
    work = root / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    # Three tokenizers: chars (expert A), byte-level BPE (expert B), chars in another id layout (target).
    char_tok = make_char_tokenizer(work / "tok_char", ALPHABET + PROMPT_SEPARATOR)
    bpe_tok = make_tokenizer(work / "tok_bpe", kind="bpe", vocab_size=384, seed=0)
    target_tok = make_char_tokenizer(work / "tok_target", ALPHABET + PROMPT_SEPARATOR, specials_last=True)

    def pairs(mix: dict[str, int], data_seed: int, restricted: bool) -> list[tuple[str, str]]:
        # The fusion's prompt format; the target's pre-training sees only the easy cases (data.py).
        return [(p + PROMPT_SEPARATOR, a) for p, a in training_pairs(mix, data_seed, "easy" if restricted else "full")]

    specs = {"expert A (add, llama/char)": ("llama", char_tok, {"add": cfg.pool}, cfg.expert_steps, "expert_add"),
             "expert B (mul, gpt2/bpe)": ("gpt2", bpe_tok, {"mul": cfg.pool}, cfg.expert_steps, "expert_mul"),
             "target before fusion (qwen2/char)": ("qwen2", target_tok, {"add": cfg.pool, "mul": cfg.pool},
                                                   cfg.target_steps, "target")}
    paths, training = {}, {}
    for i, (name, (arch, tok, mix, steps, folder)) in enumerate(specs.items()):
        init = make_model(work / f"init_{folder}", arch, seed * 10 + i, tok, cfg.model)
        paths[name] = work / folder
        restricted = folder == "target"
        training[name] = cached_train(init, paths[name],
                                      lambda mix=mix, i=i, r=restricted: pairs(mix, seed * 10 + i, r),
                                      TrainSpec(steps, seed=seed * 10 + i),
                                      {"arch": arch, "model": asdict(cfg.model), "mix": mix, "seed": seed,
                                       "regime": "easy" if restricted else "full"})
    timings[f"seed {seed}: train experts and target"] = round(time.time() - t, 1)

    # The fusion data: instruction pairs of both skills from the train split, drawn afresh.
    data = write_instructions(work / "fusion_data.jsonl", training_pairs(
        {s: cfg.fusion_examples for s in SKILLS}, seed + 1000))
    target = paths["target before fusion (qwen2/char)"]
    sources = [str(paths["expert A (add, llama/char)"]), str(paths["expert B (mul, gpt2/bpe)"])]
    fusions = {}
    for name, settings in conditions().items():
        t = time.time()
        recipe = {"target": str(target), "sources": sources, "data": str(data), "top_k": cfg.top_k,
                  "lr": cfg.fusion_lr, "epochs": cfg.fusion_epochs, "batch_size": cfg.fusion_batch,
                  "max_length": 64, "seed": seed, "device": "cpu", **settings}
        folder = "fused_" + name.split(":")[0].replace(" ", "_").replace("=", "").replace("λ", "l")
        paths[name] = work / folder
        fusions[name] = fuse(recipe, paths[name], work / "fusion_work", training)
        timings[f"seed {seed}: fuse {name}"] = round(time.time() - t, 1)
    t = time.time()
    test = load_tasks(test_file)
    models = {name: score(p, test, cfg.eval_batch) for name, p in paths.items()}
    timings[f"seed {seed}: test evaluation"] = round(time.time() - t, 1)
    return {"models": models, "fusions": fusions, "training": training}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for models and fusion work")
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    ap.add_argument("--results", type=Path, default=None,
                    help="where to write RESULTS_hetero.json (default: next to this script unless --quick)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="run only these seeds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster than two spinning
    cfg = QUICK if args.quick else FULL
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    args.work.mkdir(parents=True, exist_ok=True)
    t0, timings = time.time(), {}
    test_file = write_tasks(args.work / "test.jsonl", "test", cfg.test_items, EVAL_SEED, SKILLS, PROMPT_SEPARATOR)
    seeds = {str(s): run_seed(s, cfg, args.work, test_file, timings) for s in cfg.seeds}
    timings["total"] = round(time.time() - t0, 1)
    summary = {"study": "heterogeneous", "quick": args.quick, "config": asdict(cfg), "skills": list(SKILLS),
               "control": CONTROL, "test_items": {s: len(sample(s, "test", cfg.test_items, EVAL_SEED)) for s in SKILLS},
               "seeds": seeds, "timings_s": timings, "command": " ".join(["python", *sys.argv]),
               "machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()}}
    (args.work / "results.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    results = args.results or (None if args.quick else HERE / "RESULTS_hetero.json")
    if results:
        results.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        log.info("wrote %s", results)
    log.info("done in %.0fs", timings["total"])


if __name__ == "__main__":
    main()
