"""Two real hivemind DHT peers in their own processes: records are visible to the other peer,
a record forged under someone else's owner marker is refused, leaving removes a node at once,
and stop() reaps the DHT child and its p2pd."""

from __future__ import annotations

import psutil
import pytest
from hivemind.utils.timed_storage import get_dht_time

from node.network.dht_records import NODES_KEY, NodeRecord, holders_key
from node.network.discovery import Discovery

pytestmark = pytest.mark.timeout(120)


def test_announce_find_forge_leave_and_reap():
    a = Discovery.start()
    b = Discovery.start(initial_peers=a.maddrs())
    kids = [psutil.Process(d.pid) for d in (a, b)]
    kids += [k for d in (a, b) for k in psutil.Process(d.pid).children(recursive=True)]
    assert {"p2pd"} <= {k.name() for k in kids}
    try:
        a.announce(NodeRecord(addr="127.0.0.1:1001", models=("sha256:" + "a" * 64,)), ["sha256:" + "a" * 64])
        b.announce(NodeRecord(addr="127.0.0.1:1002"))
        assert {r.addr for r in b.find_nodes()} == {"127.0.0.1:1001", "127.0.0.1:1002"}
        assert b.find_holders("sha256:" + "a" * 64) == ["127.0.0.1:1001"]

        # B writes under A's owner marker without A's key: the validator refuses it everywhere.
        forged = b._dht.store(NODES_KEY, {"addr": "6.6.6.6:1"}, get_dht_time() + 60, subkey=a._marker)
        assert not forged
        forged = b._dht.store(holders_key("sha256:" + "a" * 64), "6.6.6.6:1", get_dht_time() + 60, subkey=a._marker)
        assert not forged
        assert "6.6.6.6:1" not in {r.addr for r in b.find_nodes()}
        assert b.find_holders("sha256:" + "a" * 64) == ["127.0.0.1:1001"]

        a.leave(["sha256:" + "a" * 64])
        assert {r.addr for r in b.find_nodes()} == {"127.0.0.1:1002"}
        assert b.find_holders("sha256:" + "a" * 64) == []
    finally:
        a.stop()
        b.stop()
    _, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive, f"left running after stop(): {[p.name() for p in alive]}"
