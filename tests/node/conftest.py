"""Fixtures for node tests: a process-reaping swarm of real nodes and a multi-chunk model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.netutil import Swarm


@pytest.fixture
def swarm():
    """Start nodes with `swarm.start(home, *flags)`; at teardown every node and child must be gone."""
    s = Swarm()
    yield s
    strays = s.close()
    assert not strays, f"processes outlived their node: {strays}"


@pytest.fixture(scope="session")
def big_model(tmp_path_factory) -> Path:
    """A ~9 MiB llama-style model, so its weights span several 1 MiB transfer chunks."""
    from node.demo.models import TinySpec, make_model

    root = tmp_path_factory.mktemp("big")
    return make_model(root / "big", arch="llama", seed=11,
                      spec=TinySpec(n_layers=2, hidden=256, heads=4, intermediate=1024))
