"""The executor's two-thread pipeline: bounded memory, written in order, failures leave nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge.errors import MergeError
from merge.executor import run_merge
from merge.io import CENSUS
from merge.recipe import load_recipe

N_LAYERS = 6
SHAPE = (256, 512)  # every tensor the same size: any two in flight would exceed one task's bytes


def _models(root: Path) -> list[Path]:
    gen = torch.Generator().manual_seed(0)
    folders = []
    for name in ("base", "e1", "e2"):
        folder = root / name
        folder.mkdir()
        tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(SHAPE, generator=gen) for i in range(N_LAYERS)}
        save_file(tensors, str(folder / "model.safetensors"))
        folders.append(folder)
    return folders


def _ties(base: Path, e1: Path, e2: Path) -> dict:
    return {"merge_method": "ties", "base_model": str(base), "models": [
        {"model": str(e1), "parameters": {"weight": 0.5, "density": 0.5}},
        {"model": str(e2), "parameters": {"weight": 0.5, "density": 0.3}}]}


def test_tasks_in_flight_never_hold_more_than_the_largest_task(tmp_path):
    folders = _models(tmp_path)
    run_merge(load_recipe(_ties(*folders)), tmp_path / "out", device="cpu")
    one_task = (3 + 2) * SHAPE[0] * SHAPE[1] * 4  # base + 2 experts, output, scratch (float32)
    assert CENSUS.peak >= 3
    assert CENSUS.peak_bytes <= one_task
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert list(out) == [f"model.layers.{i}.mlp.up_proj.weight" for i in range(N_LAYERS)]


def test_a_failing_tensor_stops_the_merge_and_leaves_no_folder(tmp_path, monkeypatch):
    import merge.executor as executor

    folders = _models(tmp_path)
    real = executor._compute

    def failing(readers, plan, task, dev):
        if task.name.startswith("model.layers.3."):
            raise MergeError(f"tensor {task.name} failed")
        return real(readers, plan, task, dev)

    monkeypatch.setattr(executor, "_compute", failing)
    with pytest.raises(MergeError, match=r"layers\.3\."):
        run_merge(load_recipe(_ties(*folders)), tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
