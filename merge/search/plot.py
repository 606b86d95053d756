"""fitness.png: every evaluation's fitness (dots) and the best so far (line), Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_fitness(records: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    xs = [r["eval"] for r in records]
    acc = [r["accuracy"] for r in records]
    best, running = [], float("-inf")
    for r in records:
        running = max(running, r["fitness"])
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.scatter(xs, acc, s=12, alpha=0.6, label="accuracy of each candidate")
    ax.plot(xs, best, color="C3", label="best fitness so far")
    if records:
        ax.axhline(records[0]["accuracy"], color="gray", linestyle="--", linewidth=1, label="uniform start")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("accuracy / fitness")
    ax.set_title("layer-wise merge search (CMA-ES)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
