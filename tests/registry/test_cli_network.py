"""The registry commands' network side against a real node (gRPC on 127.0.0.1, no DHT):
`submit` notifies the node, `ls --remote` lists what it offers, `show` falls back to it."""

from __future__ import annotations

import json

import pytest

from tests.node.netutil import Swarm


@pytest.fixture
def node_swarm():
    s = Swarm()
    yield s
    strays = s.close()
    assert not strays, f"processes outlived their node: {strays}"


def test_submit_notifies_and_remote_listing_and_show(node_swarm, model_copy, tmp_path, cli):
    node_home = tmp_path / "node-home"
    node = node_swarm.start(node_home, "--no-dht")

    res = cli("submit", model_copy("gpt2", 1), "--node", node.addr, "--json", home_dir=node_home)
    assert res.code == 0, res.err
    submitted = json.loads(res.out)
    assert submitted["node_notified"] is True
    model_id = submitted["id"]

    res = cli("ls", "--remote", "--node", node.addr, "--json")
    assert res.code == 0, res.err
    offered = {m["id"]: m for m in json.loads(res.out)["models"]}
    assert model_id in offered and offered[model_id]["signer_trusted"] is False

    assert json.loads(cli("ls", "--json").out)["models"] == []  # nothing local in this home
    res = cli("show", model_id, "--node", node.addr, "--json")
    assert res.code == 0, res.err
    shown = json.loads(res.out)
    assert shown["id"] == model_id and shown["manifest"]["name"] == submitted["name"]
    assert shown["signer"] == submitted["signer"] and shown["signer_trusted"] is False

    res = cli("show", "sha256:" + "e" * 64, "--node", node.addr)
    assert res.code == 2 and "no model" in res.err
