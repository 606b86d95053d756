"""Smoke test of the small-scale studies: both run scripts' `--quick` modes and the report built
from their JSON. Checks structure and sanity (every model scored on every item, accuracies in
[0, 1], searches spending their budget, plots written), never the numbers themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "examples" / "small_scale"


def _run(script: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(STUDY / script), *args], check=True, env=env, cwd=ROOT, timeout=240,
                   capture_output=True)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("study")
    _run("run_study.py", "--work", str(root / "homo"), "--quick")
    _run("run_hetero.py", "--work", str(root / "hetero"), "--quick")
    _run("report.py", "--homo", str(root / "homo" / "results.json"), "--hetero",
         str(root / "hetero" / "results.json"), "--steps", str(root / "homo" / "steps.json"),
         "--out", str(root / "report"))
    return {"homo": root / "homo", "hetero": root / "hetero", "report": root / "report"}


def _check_models(res: dict) -> None:
    assert len(res["seeds"]) >= 2
    for sd in res["seeds"].values():
        for v in sd["models"].values():
            assert set(v["correct"]) == set(res["skills"])
            for task, bits in v["correct"].items():
                assert len(bits) == res["test_items"][task] and set(bits) <= {"0", "1"}
                assert v["tasks"][task] == pytest.approx(bits.count("1") / len(bits))
            assert 0.0 <= v["accuracy"] <= 1.0 and v["loglik"] <= 0.0


def test_homogeneous_quick(outputs):
    res = json.loads((outputs["homo"] / "results.json").read_text())
    _check_models(res)
    budget = res["config"]["budget"]
    for sd in res["seeds"].values():
        names = set(sd["models"])
        assert {"base", "expert A (add)", "expert B (mul)", "joint control", "linear", "task arithmetic", "TIES",
                "DARE-TIES", "greedy soup"} <= names
        assert sum(n.startswith("searched") for n in names) == 2 * len(res["config"]["search_seeds"])
        for rec in sd["searches"].values():
            assert rec["evaluations"] == budget == len(rec["curve"]) and rec["best_val"] >= rec["start_val"]
            for per_model in rec["params"].values():
                assert all(len(v) == res["config"]["model"]["n_layers"] for v in per_model.values())


def test_composite_steps(outputs):
    res = json.loads((outputs["homo"] / "results.json").read_text())
    steps = json.loads((outputs["homo"] / "steps.json").read_text())
    assert set(steps) == set(res["seeds"])
    for sd in steps.values():
        assert {"base", "joint control", "TIES"} <= set(sd)
        for v in sd.values():
            assert len(v["mul step"]) == len(v["add step"]) == res["test_items"]["composite"]


def test_homogeneous_rerun_reuses_models(outputs):
    marker = outputs["homo"] / "seed0" / "base" / "model.safetensors"
    before = marker.stat().st_mtime_ns
    _run("run_study.py", "--work", str(outputs["homo"]), "--quick", "--seeds", "0")
    assert marker.stat().st_mtime_ns == before


def test_heterogeneous_quick(outputs):
    res = json.loads((outputs["hetero"] / "results.json").read_text())
    _check_models(res)
    for sd in res["seeds"].values():
        assert res["control"] in sd["models"] and len(sd["fusions"]) == 5
        for r in sd["fusions"].values():
            assert len(r["mean_weights"]) == 3 and len(r["aligned_fraction"]) == 2 and r["steps"] > 0


def test_report(outputs):
    md = (outputs["report"] / "RESULTS.md").read_text()
    assert "generated:begin" in md and "| base |" in md and "min_ce λ=0.5" in md and "step by step" in md
    for png in ("accuracy.png", "search_fitness.png", "layer_coefficients.png", "hetero_accuracy.png"):
        assert (outputs["report"] / png).stat().st_size > 1000
