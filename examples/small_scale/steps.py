"""Step-level scoring of the composite chains: which of the two steps does each model get right?

    python examples/small_scale/steps.py --work /tmp/small_scale     # → steps.json there (and STEPS.json here)

Exact match says only whether a whole chain `7*134=938,938+32=970` is right. Here each of a
model's greedy chains (`merge.eval.scoring.generate_greedy`, the harness's own generation) is
split into its steps: the mul step is right when it equals the gold first step; the add step is
right when the model's own sum is correct for the operands it wrote (so a wrong product does not
hide a correct addition). A merge that composes would do the mul step like expert B and the add
step like expert A on the same chains.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from merge.eval import load_model, load_tasks
from merge.eval.scoring import generate_greedy

HERE = Path(__file__).resolve().parent
ADD_STEP = re.compile(r"^(\d+)\+(\d+)=(\d+)$")
# Folder of each model in a seed's work dir (run_study.py's layout); searched merges add their seed.
FOLDERS = {"base": "base", "expert A (add)": "expert_add", "expert B (mul)": "expert_mul", "joint control": "joint",
           "linear": "linear", "task arithmetic": "task_arithmetic", "TIES": "TIES", "DARE-TIES": "DARE-TIES"}


def score_steps(model_dir: Path, tasks, max_new_tokens: int = 32) -> dict[str, str]:
    """Per composite item, as 0/1 strings: mul step right, add step right on its own operands."""
    model, tok = load_model(model_dir)
    outs = []
    for i in range(0, len(tasks), 128):
        batch = tasks[i:i + 128]
        outs += generate_greedy(model, tok, [t.prompt for t in batch], max_new_tokens, torch.device("cpu"))
    mul, add = "", ""
    for t, out in zip(tasks, outs, strict=True):
        first, _, second = out.split("\n")[0].strip().partition(",")
        mul += "1" if first == str(t.answer).split(",")[0] else "0"
        m = ADD_STEP.match(second)
        add += "1" if m and int(m[1]) + int(m[2]) == int(m[3]) else "0"
    return {"mul step": mul, "add step": add}


def seed_models(seed_dir: Path, search_names: list[str]) -> dict[str, Path]:
    paths = {name: seed_dir / folder for name, folder in FOLDERS.items()}
    for name in search_names:  # "searched TIES (search seed 0)" → search_TIES_0/model
        method, s = name.removeprefix("searched ").split(" (search seed ")
        paths[name] = seed_dir / f"search_{method}_{s.rstrip(')')}" / "model"
    return paths


def write_steps(work: Path, results: Path | None) -> dict:
    """Score every model of a finished run_study.py work dir; write steps.json (and `results`)."""
    res = json.loads((work / "results.json").read_text())
    tasks = [t for t in load_tasks(work / "test.jsonl") if t.task == "composite"]
    out = {seed: {name: score_steps(path, tasks) for name, path in
                  seed_models(work / f"seed{seed}", list(sd["searches"])).items()}
           for seed, sd in res["seeds"].items()}
    for path in (work / "steps.json", results):
        if path:
            path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="run_study.py's work dir (with results.json)")
    ap.add_argument("--results", type=Path, default=None, help="also write here (default: STEPS.json next to "
                    "this script unless the run was --quick)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    quick = json.loads((args.work / "results.json").read_text())["quick"]
    write_steps(args.work, args.results or (None if quick else HERE / "STEPS.json"))
    print(args.work / "steps.json", file=sys.stderr)


if __name__ == "__main__":
    main()
