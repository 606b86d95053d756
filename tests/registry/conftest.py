"""Registry test helpers: a submitted tiny model, a second identity, and no-half-written checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


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
