"""Three real nodes on loopback: discovery through the DHT alone, remote listing, pull, status,
clean shutdown and no process left behind — even when a node is killed with SIGKILL."""

from __future__ import annotations

import json
import signal
import time

import pytest

from node.network.dht_records import ANNOUNCE_PERIOD_S
from tests.node.netutil import folder_bytes, run_cli, submit_copy, wait_gone

pytestmark = pytest.mark.timeout(240)


def test_dht_discovery_pull_and_clean_shutdown(swarm, families, tmp_path):
    from node.network.client import operator_metadata
    from node.network.remote import list_remote, notify_submitted, show_remote

    _, experts = families["llama"]
    ha, hb, hc = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    model_id, folder = submit_copy(experts[0], ha, tmp_path / "work")
    a = swarm.start(ha)
    # B joins knowing only A's gRPC address; C joins B's DHT by multiaddr and never learns of A
    # through gossip, so whatever C finds about A's model came through the DHT.
    b = swarm.start(hb, "--peers", a.addr)
    c = swarm.start(hc, "--initial-peers", ",".join(b.dht_maddrs))
    assert a.dht_maddrs and b.dht_maddrs and c.dht_maddrs

    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = [r for r in list_remote(c.addr) if r["id"] == model_id]
        time.sleep(0.3)
    assert rows, "C never saw A's model through the DHT"
    assert rows[0]["holders"] == [a.addr] and rows[0]["local"] is False and rows[0]["name"]

    shown = show_remote(c.addr, model_id)
    assert shown is not None and shown["id"] == model_id and shown["manifest"]["kind"] == "expert"
    assert show_remote(c.addr, "sha256:" + "0" * 64) is None

    out = tmp_path / "pulled"
    res = run_cli("pull", model_id, "-o", str(out), "--node", c.addr, "--json", home=hc)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["sources"] == [a.addr] and doc["bytes_fetched"] > 0
    assert folder_bytes(out) == folder_bytes(folder)
    # C now holds the model itself, so the network lists two holders and C serves it locally.
    assert notify_submitted(c.addr, model_id) is False  # Notify is for C's operator only
    assert notify_submitted(c.addr, model_id, operator_metadata(hc)) is True
    status = run_cli("node", "status", "--node", c.addr, "--json", home=hc)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["models"] == [model_id] and info["addr"] == c.addr and info["dht_maddrs"] == c.dht_maddrs

    # A second pull of a held model comes from the local store.
    again = run_cli("pull", model_id[:20], "-o", str(tmp_path / "again"), "--json", home=hc)
    assert again.returncode == 0 and json.loads(again.stdout)["sources"] == ["local"]

    # SIGTERM: clean exit, node file removed, DHT child and p2pd gone.
    assert swarm.stop(a) == 0
    assert not (ha / "node.json").exists()
    assert wait_gone(a.pid, 5.0) == []
    # A announced leaving (DHT tombstones + goodbye gossip): B now lists C as the only holder.
    deadline = time.monotonic() + 20
    holders: list[str] = []
    while time.monotonic() < deadline and holders != [c.addr]:
        holders = next((r["holders"] for r in list_remote(b.addr) if r["id"] == model_id), [])
        time.sleep(0.3)
    assert holders == [c.addr]


def test_sigkill_leaves_no_dht_child_or_p2pd(swarm, tmp_path):
    node = swarm.start(tmp_path / "K")
    names = {p.name() for p in node.session_procs()}
    assert "p2pd" in names, f"expected a p2pd in the node's session, saw {names}"
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(5)
    left = wait_gone(node.pid, 10.0)
    assert left == [], f"survived SIGKILL of the node: {[p.name() for p in left]}"


def test_no_dht_nodes_find_each_other_by_gossip(swarm, families, tmp_path):
    from node.network.remote import list_remote

    _, experts = families["gpt2"]
    model_id, _ = submit_copy(experts[1], tmp_path / "A", tmp_path / "work")
    a = swarm.start(tmp_path / "A", "--no-dht")
    b = swarm.start(tmp_path / "B", "--no-dht", "--peers", a.addr)
    c = swarm.start(tmp_path / "C", "--no-dht", "--peers", b.addr)  # two hops from the holder
    assert c.dht_maddrs == []
    # Newcomers are greeted at once, so this must take well under one announce period (60 s):
    # passing only after a periodic round would hide a lost greeting (C was heard of by A
    # before it called A, and A then waited a whole period to push its ads).
    deadline = time.monotonic() + ANNOUNCE_PERIOD_S - 15
    seen: list[dict] = []
    while time.monotonic() < deadline and not seen:
        seen = [r for r in list_remote(c.addr) if r["id"] == model_id]
        time.sleep(0.2)
    assert seen and seen[0]["holders"] == [a.addr]
    # Gossip introduced everyone to everyone.
    for node in (a, b, c):
        info = json.loads(run_cli("node", "status", "--node", node.addr, "--json", home=node.home).stdout)
        assert info["peers"] == 2, (node.addr, info)
