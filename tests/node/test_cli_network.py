"""The network commands through the real CLI (in-process), against real in-process nodes without
a DHT: submit advertises to peers, ls --remote / show / node status / pull, trust, and the
errors a user sees when something is wrong."""

from __future__ import annotations

import json
import time

import pytest

from tests.node.netutil import folder_bytes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def make_node(tmp_path):
    from node.process.config import NodeConfig
    from node.process.daemon import Node

    started = []

    def make(name: str, *peers: str) -> Node:
        n = Node(NodeConfig(home=tmp_path / name, listen="127.0.0.1:0", dht=False, peers=peers))
        n.start()
        started.append(n)
        return n

    yield make
    for n in started:
        n.stop()


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_submit_on_a_running_node_reaches_peers_and_pull_with_trust(cli, make_node, model_copy, tmp_path,
                                                                    monkeypatch):
    a = make_node("A")
    b = make_node("B", a.addr)
    monkeypatch.setenv("MERGENET_NODE", a.addr)
    folder = model_copy("qwen2", 1)
    res = cli("submit", folder, "--json", home_dir=a.home.root)
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    model_id = doc["id"]
    assert doc["node_notified"] is True

    # B hears about it from A (Notify → announce → Advertise), and its listing says who holds it.
    def seen():
        r = cli("ls", "--remote", "--json", "--node", b.addr, home_dir=b.home.root)
        return [m for m in json.loads(r.out)["models"] if m["id"] == model_id]
    rows = wait_for(seen)
    assert rows[0]["holders"] == [a.addr] and rows[0]["signer_trusted"] is False

    shown = cli("show", model_id, "--json", "--node", b.addr, home_dir=b.home.root)
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["manifest"]["name"] == json.loads((folder / "mergenet.json").read_text())["name"]

    # --trusted-only refuses the stranger's model (exit 3, nothing written) until B trusts the key.
    out = tmp_path / "pulled"
    refused = cli("pull", model_id, "-o", out, "--trusted-only", "--node", b.addr, home_dir=b.home.root)
    assert refused.code == 3 and "trust" in refused.err and not out.exists()
    assert cli("trust", "add", doc["signer"], home_dir=b.home.root).code == 0
    pulled = cli("pull", model_id, "-o", out, "--trusted-only", "--node", b.addr, "--json", home_dir=b.home.root)
    assert pulled.code == 0, pulled.err
    assert json.loads(pulled.out)["sources"] == [a.addr]
    assert folder_bytes(out) == folder_bytes(folder)

    status = cli("node", "status", "--node", b.addr, "--json", home_dir=b.home.root)
    info = json.loads(status.out)
    assert info["models"] == [model_id] and info["peers"] == 1 and info["dht_maddrs"] == []
    text = cli("node", "status", "--node", b.addr, home_dir=b.home.root)
    assert b.addr in text.out and model_id in text.out


def test_user_errors_are_one_line_with_the_right_exit_code(cli, tmp_path):
    dead = "127.0.0.1:9"  # discard port: nothing listens
    res = cli("node", "status", "--node", dead)
    assert res.code == 1 and res.err.startswith("mergenet: error:") and dead in res.err
    assert len(res.err.strip().splitlines()) == 1
    res = cli("pull", "sha256:" + "0" * 64, "-o", tmp_path / "x", "--node", dead)
    assert res.code == 1 and "no mergenet node answers" in res.err
    res = cli("pull", "abc", "-o", tmp_path / "x", "--from", dead)
    assert res.code == 2 and "full id" in res.err
    res = cli("node", "start", "--listen", "nonsense")
    assert res.code == 2 and "--listen" in res.err
    res = cli("pull", "sha256:" + "0" * 64, "-o", tmp_path / "x", "--from", dead)
    assert res.code == 1 and "no holder served" in res.err


def test_pull_from_the_local_store_and_refusing_an_existing_folder(cli, make_node, model_copy, tmp_path):
    folder = model_copy("gpt2", 1)
    model_id = json.loads(cli("submit", folder, "--json", "--node", "127.0.0.1:9").out)["id"]
    out = tmp_path / "copy"
    res = cli("pull", model_id[:12], "-o", out, "--json")
    assert res.code == 0 and json.loads(res.out)["sources"] == ["local"]
    assert folder_bytes(out) == folder_bytes(folder)
    again = cli("pull", model_id, "-o", out)
    assert again.code == 2 and "already exists" in again.err
