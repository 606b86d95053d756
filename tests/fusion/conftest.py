"""Fusion fixtures: one small world of trained sources + untrained target, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict[str, Path]:
    """READ-ONLY: two trained sources (BPE llama, char qwen2), a gpt2 target with a third tokenizer,
    train.jsonl and heldout.jsonl."""
    from tests.fusion.world import build_world

    return build_world(tmp_path_factory.mktemp("fusion-world"))


@pytest.fixture
def recipe_file(world, tmp_path) -> Path:
    """A small fusion recipe over the world, in its own folder (relative data path, absolute models)."""
    path = tmp_path / "fuse.yaml"
    path.write_text(
        f"target: {world['target']}\n"
        f"sources: [{world['src_bpe']}, {world['src_char']}]\n"
        f"data: {world['train']}\n"
        "top_k: 8\nfusion: min_ce\nlm_loss_weight: 0.5\nlr: 0.003\nepochs: 2\nbatch_size: 16\nmax_length: 64\n"
        "device: cpu\n"
    )
    return path
