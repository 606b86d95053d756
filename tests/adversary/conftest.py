"""Fixtures for the adversary tests: a model whose weights span several transfer chunks, stored
in a home that a test's node serves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.node.netutil import submit_copy


@dataclass(frozen=True)
class HeldModel:
    home: Path
    model_id: str
    folder: Path
    weights_digest: str  # hex sha256 of model.safetensors, the blob a flood asks for


@pytest.fixture(scope="session")
def chunky_model(tmp_path_factory) -> Path:
    """A ~9 MiB llama-style model: a reader that takes nothing blocks the first 1 MiB chunk."""
    from node.demo.models import TinySpec, make_model

    root = tmp_path_factory.mktemp("chunky")
    return make_model(root / "chunky", arch="llama", seed=11,
                      spec=TinySpec(n_layers=2, hidden=256, heads=4, intermediate=1024))


@pytest.fixture
def held(chunky_model, tmp_path) -> HeldModel:
    home = tmp_path / "holder"
    model_id, folder = submit_copy(chunky_model, home, tmp_path / "work")
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return HeldModel(home, model_id, folder, digest)
