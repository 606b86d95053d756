"""Registry test helpers: a submitted tiny model, a second identity, and no-half-written checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_local_node(monkeypatch):
    """`submit` notifies the local node; point it at a port where nothing listens, so a node
    someone runs on the default port cannot change what these tests see."""
    monkeypatch.setenv("MERGENET_NODE", "127.0.0.1:9")


@pytest.fixture
def submitted(model_copy, cli, home):
    """(folder, model id) of a freshly submitted llama expert in the test home."""
    folder = model_copy("llama", 1)
    res = cli("submit", folder, "--json")
    assert res.code == 0, res.err
    return folder, json.loads(res.out)["id"]


@pytest.fixture
def other_home(tmp_path) -> Path:
    h = tmp_path / "other-home"
    h.mkdir()
    return h
