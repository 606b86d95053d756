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


def test_an_elementwise_merge_in_row_pieces_never_holds_its_inputs_whole(tmp_path, monkeypatch):
    import merge.executor as executor

    folders = _models(tmp_path)
    recipe = load_recipe({"merge_method": "task_arithmetic", "base_model": str(folders[0]), "models": [
        {"model": str(folders[1]), "parameters": {"weight": 0.5}},
        {"model": str(folders[2]), "parameters": {"weight": 0.7}}]})
    run_merge(recipe, tmp_path / "whole", device="cpu")
    whole_peak = CENSUS.peak_bytes
    monkeypatch.setattr(executor, "PIECE_ELEMENTS", 10_000)  # 19-row pieces of a 256-row tensor
    run_merge(recipe, tmp_path / "pieces", device="cpu")
    tensor = SHAPE[0] * SHAPE[1] * 4
    assert CENSUS.peak_bytes <= 2 * (tensor + 5 * 19 * SHAPE[1] * 4)  # two tasks: output + one piece's worth
    assert CENSUS.peak_bytes < whole_peak / 2
    whole, pieces = ((tmp_path / d / "model.safetensors").read_bytes() for d in ("whole", "pieces"))
    assert whole == pieces


def test_a_failing_tensor_stops_the_merge_and_leaves_no_folder(tmp_path, monkeypatch):
    import merge.executor as executor

    folders = _models(tmp_path)
    real = executor._compute

    def failing(readers, plan, task, dev, *args):
        if task.name.startswith("model.layers.3."):
            raise MergeError(f"tensor {task.name} failed")
        return real(readers, plan, task, dev, *args)

    monkeypatch.setattr(executor, "_compute", failing)
    with pytest.raises(MergeError, match=r"layers\.3\."):
        run_merge(load_recipe(_ties(*folders)), tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_row_range_reads_are_exact_and_bounded(tmp_path):
    from merge.io import ModelReader

    folders = _models(tmp_path)
    name = "model.layers.0.mlp.up_proj.weight"
    with ModelReader(folders[0]) as reader:
        whole = reader.get(name)
        assert torch.equal(reader.get(name, row_range=(17, 40)), whole[17:40])
        assert reader.get(name, row_range=(5, 5)).shape == (0, SHAPE[1])
        for bad in ((-1, 3), (3, 2), (0, SHAPE[0] + 1)):
            with pytest.raises(MergeError, match="outside tensor"):
                reader.get(name, row_range=bad)
