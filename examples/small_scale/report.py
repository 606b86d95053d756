"""Tables and plots of the small-scale studies, from the JSON the two run scripts write.

    python examples/small_scale/report.py                       # RESULTS*.json here → RESULTS.md, PNGs
    python examples/small_scale/report.py --homo /tmp/q/results.json --hetero /tmp/h/results.json --out /tmp/r

The generated part of RESULTS.md sits between two marker lines and is replaced on every run; the
reading written around it is kept. Every interval is computed here from the per-item outcomes
the run scripts saved: a 95% bootstrap over test items within a seed, and a 95% Student-t
interval of the across-seed mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import bootstrap_ci, paired_bootstrap_ci, t_interval

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- generated:begin (report.py) -->", "<!-- generated:end -->"
EXPERTS = ("expert A (add)", "expert B (mul)")
MERGES = ("linear", "task arithmetic", "TIES", "DARE-TIES", "greedy soup", "searched TIES", "searched DARE-TIES")


def bits(s: str) -> list[bool]:
    return [c == "1" for c in s]


def variants(seed_data: dict, model: str) -> list[dict]:
    """A model's evaluations in one seed: one, or one per search seed for the searched merges."""
    models = seed_data["models"]
    if model in models:
        return [models[model]]
    return [v for k, v in models.items() if k.startswith(model + " (search seed")]


def correct(v: dict, task: str) -> list[bool]:
    if task == "overall":
        return [b for t in v["correct"] for b in bits(v["correct"][t])]
    return bits(v["correct"][task])


def acc(v: dict, task: str) -> float:
    c = correct(v, task)
    return sum(c) / len(c)


def fmt(mean: float, lo: float, hi: float) -> str:
    return f"{mean:.3f}" if np.isnan(lo) else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def model_names(res: dict) -> list[str]:
    names: list[str] = []
    for k in res["seeds"][next(iter(res["seeds"]))]["models"]:
        name = k.split(" (search seed")[0]
        if name not in names:
            names.append(name)
    return names


def across(res: dict, model: str, task: str) -> tuple[float, float, float]:
    """Across-seed mean (search seeds averaged within a training seed) with its t-interval."""
    return t_interval([np.mean([acc(v, task) for v in variants(sd, model)]) for sd in res["seeds"].values()])


def mean_table(res: dict, tasks: Sequence[str], extra: dict[str, list[str]] | None = None) -> str:
    head = "| model | " + " | ".join(tasks) + " |" + "".join(f" {k} |" for k in (extra or {}))
    rows = [head, "|" + "---|" * (1 + len(tasks) + len(extra or {}))]
    for m in model_names(res):
        cells = [fmt(*across(res, m, t)) for t in tasks] + [v[i] for v in (extra or {}).values()
                                                             for i in [model_names(res).index(m)]]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def per_seed_table(res: dict, tasks: Sequence[str]) -> str:
    rows = ["| model | seed | " + " | ".join(tasks) + " |", "|" + "---|" * (2 + len(tasks))]
    for seed, sd in res["seeds"].items():
        for name, v in sd["models"].items():
            cells = [fmt(acc(v, t), *bootstrap_ci(correct(v, t))) for t in tasks]
            rows.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def diff_row(res: dict, model: str, task: str, reference) -> tuple[str, bool]:
    """Mean of acc(model) − acc(reference) over seeds with its t-interval, and how many runs'
    paired bootstrap intervals lie above / below zero. `reference(seed_data, task)` → a variant."""
    per_seed, above, below, runs = [], 0, 0, 0
    for sd in res["seeds"].values():
        ref = reference(sd, task)
        ds = []
        for v in variants(sd, model):
            lo, hi = paired_bootstrap_ci(correct(v, task), correct(ref, task))
            above, below, runs = above + (lo > 0), below + (hi < 0), runs + 1
            ds.append(acc(v, task) - acc(ref, task))
        per_seed.append(float(np.mean(ds)))
    mean, lo, hi = t_interval(per_seed)
    verdict = "**yes**" if lo > 0 else ("no (worse)" if hi < 0 else "no")
    cell = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not np.isnan(lo) else f"{mean:+.3f}"
    return f"{cell} | {above}/{runs} above, {below}/{runs} below | {verdict}", lo > 0


def best_expert(sd: dict, task: str) -> dict:
    return max((sd["models"][e] for e in EXPERTS), key=lambda v: acc(v, task))


def own_expert(sd: dict, task: str) -> dict:
    return sd["models"][{"add": EXPERTS[0], "mul": EXPERTS[1]}[task]]


def homogeneous(res: dict, out: Path) -> str:
    tasks = [*res["skills"], "overall"]
    cfg = res["config"]
    n_items = ", ".join(f"{k} {v}" for k, v in res["test_items"].items())
    parts = [f"### Homogeneous: test accuracy, mean over {len(res['seeds'])} training seeds [95% t-interval]\n",
             f"Test items per task: {n_items} (the same items for every model and seed). Searched merges: mean "
             f"of {len(cfg['search_seeds'])} search seeds within each training seed.\n", mean_table(res, tasks)]
    rows = ["| expert | Δ add | Δ mul | Δ composite |", "|---|---|---|---|"]
    for e in EXPERTS:
        cells = []
        for t in res["skills"]:
            d = [acc(sd["models"][e], t) - acc(sd["models"]["base"], t) for sd in res["seeds"].values()]
            m, lo, hi = t_interval(d)
            cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not np.isnan(lo) else f"{m:+.3f}")
        rows.append(f"| {e} | " + " | ".join(cells) + " |")
    parts += ["\n### Specialisation and forgetting: expert − base, mean over seeds [95% t-interval]\n",
              "\n".join(rows)]
    q = ["| merge | comparison | mean Δ over seeds [95% t-interval] | runs with paired bootstrap CI | beyond? |",
         "|---|---|---|---|---|"]
    for m in [*MERGES, "joint control"]:
        cell, _ = diff_row(res, m, "composite", best_expert)
        q.append(f"| {m} | composite − best expert on composite | {cell} |")
    for m in [*MERGES, "joint control"]:
        for t in ("add", "mul"):
            cell, _ = diff_row(res, m, t, own_expert)
            q.append(f"| {m} | {t} − {'expert A' if t == 'add' else 'expert B'} on {t} | {cell} |")
    for m in [*MERGES, "joint control"]:
        cell, _ = diff_row(res, m, "composite", lambda sd, t: sd["models"]["base"])
        q.append(f"| {m} | composite − base | {cell} |")
    parts += ["\n### The questions, in numbers (paired over the same test items)\n",
              "'Beyond' means the across-seed 95% t-interval of the difference excludes 0. The runs column "
              "counts (training seed × search seed) runs whose 95% paired bootstrap interval over items lies "
              "entirely above or below 0.\n", "\n".join(q)]
    s = ["| method | training seed | search seed | val: uniform → best (eval #) | val gain | test overall: "
         "uniform → searched | test gain | test composite: uniform → searched |", "|---|---|---|---|---|---|---|---|"]
    val_gain: dict[str, list[float]] = {}
    test_gain: dict[str, list[float]] = {}
    for seed, sd in res["seeds"].items():
        for name, rec in sd["searches"].items():
            method = name.split("searched ")[1].split(" (")[0]
            ss = name.split("search seed ")[1].rstrip(")")
            uni, srch = sd["models"][method], sd["models"][name]
            vg = rec["best_val"] - rec["start_val"]
            tg = acc(srch, "overall") - acc(uni, "overall")
            val_gain.setdefault(method, []).append(vg)
            test_gain.setdefault(method, []).append(tg)
            s.append(f"| {method} | {seed} | {ss} | {rec['start_val']:.3f} → {rec['best_val']:.3f} "
                     f"({rec['best_eval']}) | {vg:+.3f} | {acc(uni, 'overall'):.3f} → {acc(srch, 'overall'):.3f} | "
                     f"{tg:+.3f} | "
                     f"{acc(uni, 'composite'):.3f} → {acc(srch, 'composite'):.3f} |")
    g = ["| method | searched − uniform on test (overall) | on composite | mean val gain | mean test gain |",
         "|---|---|---|---|---|"]
    for method in ("TIES", "DARE-TIES"):
        cell_o, _ = diff_row(res, f"searched {method}", "overall", lambda sd, t, m=method: sd["models"][m])
        cell_c, _ = diff_row(res, f"searched {method}", "composite", lambda sd, t, m=method: sd["models"][m])
        g.append(f"| {method} | {cell_o.split(' | ')[0]} ({cell_o.split(' | ')[2]}) | {cell_c.split(' | ')[0]} "
                 f"({cell_c.split(' | ')[2]}) | {np.mean(val_gain[method]):+.3f} | {np.mean(test_gain[method]):+.3f} |")
    parts += [f"\n### Layer-wise search vs uniform (CMA-ES, budget {cfg['budget']} evaluations on "
              f"{cfg['val_items']} val items per task, per-layer weight ∈ {list(cfg['weight_bounds'])} and "
              "density ∈ [0.1, 1])\n", "\n".join(g), "\n", "\n".join(s)]
    soups = [f"seed {seed}: {', '.join(sd['soup']['members'])}" for seed, sd in res["seeds"].items()]
    parts += ["\nGreedy soup members (picked on val): " + "; ".join(soups) + "."]
    parts += ["\n![accuracy per model](accuracy.png)\n\n![search fitness](search_fitness.png)\n\n"
              "![per-layer searched coefficients](layer_coefficients.png)"]
    parts += ["\n<details><summary>Per-seed accuracies with 95% bootstrap intervals over items</summary>\n",
              per_seed_table(res, tasks), "\n</details>"]
    plot_accuracy(res, tasks, out / "accuracy.png", "Homogeneous merges: test accuracy")
    plot_search(res, out / "search_fitness.png")
    plot_layers(res, out / "layer_coefficients.png")
    return "\n".join(parts)


def heterogeneous(res: dict, out: Path) -> str:
    tasks = [*res["skills"], "overall"]
    names = model_names(res)
    nll = []
    for m in names:
        vals = [-sd["models"][m]["loglik"] for sd in res["seeds"].values()]
        nll.append(fmt(*t_interval(vals)))
    parts = [f"### Heterogeneous: test accuracy and response NLL, mean over {len(res['seeds'])} seeds "
             "[95% t-interval]\n",
             f"Test items per task: {', '.join(f'{k} {v}' for k, v in res['test_items'].items())}. Response NLL: "
             "mean per-token negative log-likelihood of the gold test answers (in each model's own tokens, so "
             "comparable between the target's rows only).\n", mean_table(res, tasks, {"response NLL": nll})]
    control = res["control"]
    q = ["| fused target | task | Δ vs control, mean over seeds [95% t-interval] | runs with paired bootstrap CI "
         "| beyond? |", "|---|---|---|---|---|"]
    for m in names:
        if m.startswith(("min_ce", "avg_ce")):
            for t in tasks:
                cell, _ = diff_row(res, m, t, lambda sd, t: sd["models"][control])
                q.append(f"| {m} | {t} | {cell} |")
    d = ["| fused target | Δ response NLL vs control, per seed | mean |", "|---|---|---|"]
    for m in names:
        if m.startswith(("min_ce", "avg_ce")):
            per = [sd["models"][control]["loglik"] - sd["models"][m]["loglik"] for sd in res["seeds"].values()]
            d.append(f"| {m} | {', '.join(f'{-x:+.4f}' for x in per)} | {-np.mean(per):+.4f} |")
    f = ["| seed | condition | mean fusion weight (target, A, B) | aligned share (A, B) | train LM loss before → after "
         "| steps |", "|---|---|---|---|---|---|"]
    for seed, sd in res["seeds"].items():
        for name, r in sd["fusions"].items():
            f.append(f"| {seed} | {name} | {', '.join(f'{w:.2f}' for w in r['mean_weights'])} | "
                     f"{', '.join(f'{a:.2f}' for a in r['aligned_fraction'])} | {r['before']['lm_loss']:.3f} → "
                     f"{r['after']['lm_loss']:.3f} | {r['steps']} |")
    parts += ["\n### Fused target − control (paired over the same test items)\n", "\n".join(q), "\n", "\n".join(d),
              "\n### Fusion runs\n", "\n".join(f), "\n![heterogeneous accuracy](hetero_accuracy.png)",
              "\n<details><summary>Per-seed accuracies with 95% bootstrap intervals over items</summary>\n",
              per_seed_table(res, tasks), "\n</details>"]
    plot_accuracy(res, tasks, out / "hetero_accuracy.png", "Fusion of heterogeneous experts: test accuracy")
    return "\n".join(parts)


def steps_table(steps: dict, res: dict) -> str:
    """The composite chains step by step (steps.py): mean over seeds [95% t-interval]."""
    names = model_names(res)
    rows = ["### Composite chains, step by step (steps.py)\n",
            "Share of the 300 composite test chains whose mul step equals the gold one, and whose add step is "
            "a correct sum of the operands the model itself wrote; mean over seeds [95% t-interval].\n",
            "| model | mul step right | add step right (own operands) | whole chain right |", "|---|---|---|---|"]
    for m in names:
        cells = []
        for key in ("mul step", "add step"):
            per = []
            for sd in steps.values():
                vals = [v[key] for k, v in sd.items() if k == m or k.startswith(m + " (search seed")]
                per.append(float(np.mean([sum(bits(b)) / len(b) for b in vals])) if vals else float("nan"))
            cells.append(fmt(*t_interval(per)) if not np.isnan(per).any() else "—")
        rows.append(f"| {m} | {cells[0]} | {cells[1]} | {fmt(*across(res, m, 'composite'))} |")
    return "\n".join(rows)


def timing_table(res: dict) -> str:
    rows = ["| phase | s |", "|---|---|"] + [f"| {k} | {v} |" for k, v in res["timings_s"].items()]
    return "\n".join(rows)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to files
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(res: dict, tasks: Sequence[str], path: Path, title: str) -> None:
    plt = _plt()
    names = model_names(res)
    width = 0.8 / len(tasks)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(names)), 4.5), dpi=100)
    for j, t in enumerate(tasks):
        stats = [across(res, m, t) for m in names]
        xs = np.arange(len(names)) + (j - (len(tasks) - 1) / 2) * width
        means = np.array([s[0] for s in stats])
        err = np.array([[s[0] - s[1], s[2] - s[0]] for s in stats]).T
        ax.bar(xs, means, width, label=t, yerr=None if np.isnan(err).all() else err, capsize=2)
        for x, m in zip(xs, names, strict=True):  # every seed as a dot: the spread behind the bar
            ax.scatter([x] * len(res["seeds"]), [np.mean([acc(v, t) for v in variants(sd, m)])
                                                 for sd in res["seeds"].values()], s=6, color="k", zorder=3)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([n.replace(" (", "\n(") for n in names], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (mean over seeds, 95% t-interval)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_search(res: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    for ax, method in zip(axes, ("TIES", "DARE-TIES"), strict=True):
        for seed, sd in res["seeds"].items():
            for name, rec in sd["searches"].items():
                if name.split("searched ")[1].split(" (")[0] != method:
                    continue
                curve = np.maximum.accumulate(rec["curve"])
                ss = name.split("search seed ")[1].rstrip(")")
                line, = ax.plot(curve, label=f"seed {seed} / search {ss}")
                ax.scatter(range(len(rec["curve"])), rec["curve"], s=4, alpha=0.3, color=line.get_color())
        ax.set_title(f"layer-wise CMA-ES over {method}: val accuracy (best so far; dots: each candidate)",
                     fontsize=8)
        ax.set_xlabel("evaluation (0 = uniform start)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation accuracy")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_layers(res: dict, path: Path) -> None:
    """Heat map per method: rows are (gene, run), columns layers; the value is the searched coefficient."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 7), dpi=100)
    for ax, method in zip(axes, ("TIES", "DARE-TIES"), strict=True):
        rows, labels = [], []
        for gene in ("weight", "density"):
            for who, folder in (("A", "expert_add"), ("B", "expert_mul")):
                for seed, sd in res["seeds"].items():
                    for name, rec in sd["searches"].items():
                        if name.split("searched ")[1].split(" (")[0] != method:
                            continue
                        ref = next(k for k in rec["params"] if k.rstrip("/").endswith(folder))
                        rows.append(rec["params"][ref][gene])
                        labels.append(f"{who} {gene} · s{seed}/{name.split('search seed ')[1].rstrip(')')}")
        data = np.array(rows)
        im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0, vmax=max(1.0, float(data.max())))
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=6)
        ax.set_xticks(range(data.shape[1]))
        ax.set_xlabel("layer")
        ax.set_title(f"searched per-layer coefficients, {method}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render(homo: dict | None, hetero: dict | None, out: Path, steps: dict | None = None) -> str:
    parts = [BEGIN, "", "_Generated by `report.py` from the run scripts' JSON; do not edit by hand._", ""]
    if homo:
        parts += [homogeneous(homo, out), ""]
        if steps:
            parts += [steps_table(steps, homo), ""]
        parts += [f"Homogeneous timings (`{homo['command']}`, "
                  f"{homo['machine']['threads']} torch thread):\n", timing_table(homo), ""]
    if hetero:
        parts += [heterogeneous(hetero, out), "", f"Heterogeneous timings (`{hetero['command']}`):\n",
                  timing_table(hetero), ""]
    return "\n".join([*parts, END])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--homo", type=Path, default=HERE / "RESULTS.json")
    ap.add_argument("--hetero", type=Path, default=HERE / "RESULTS_hetero.json")
    ap.add_argument("--steps", type=Path, default=HERE / "STEPS.json", help="steps.py's output, if any")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md and the PNGs")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load = lambda p: json.loads(p.read_text()) if p.is_file() else None  # noqa: E731
    block = render(load(args.homo), load(args.hetero), args.out, load(args.steps))
    md = args.out / "RESULTS.md"
    text = md.read_text() if md.is_file() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = "# Small-scale study of the paper's claims\n\n" + block + "\n"
    md.write_text(text)
    print(md)


if __name__ == "__main__":
    main()
