"""The bounds' own rules, without a network: client hosts, token buckets, peer-table eviction."""

from __future__ import annotations

import time

from node.network.peers import MAX_PEERS, MAX_UNSEEN_PER_ROUND, PeerTable
from registry.services.limits import client_host
from registry.services.rate import RateLimiter


def test_client_host_is_the_connection_host_without_port():
    assert client_host("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert client_host("ipv6:[::1]:5000") == "::1"
    assert client_host("unix:/tmp/sock") == "unix:/tmp/sock"


def test_a_bucket_refuses_past_its_burst_refills_and_keeps_hosts_apart():
    limiter = RateLimiter(rate_per_s=20.0, burst=3.0)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # another host has its own bucket
    time.sleep(0.1)  # 20 tokens/s: two more
    assert limiter.allow("a")


def test_hearsay_makes_room_for_itself_but_never_evicts_contacted_or_operator_peers():
    table = PeerTable()
    table.add("127.0.0.2:1", source="flag")
    table.heard("127.0.0.3:1")
    table.seen("127.0.0.3:1")
    for i in range(MAX_PEERS * 3):
        table.heard(f"127.1.{i // 250}.{i % 250}:1")
    addrs = {p.addr for p in table.all()}
    assert len(addrs) == MAX_PEERS and {"127.0.0.2:1", "127.0.0.3:1"} <= addrs
    assert table.good()[0] == "127.0.0.3:1"  # contacted first
    targets = table.round_targets()
    assert targets[:2] == ["127.0.0.3:1", "127.0.0.2:1"] and len(targets) == 2 + MAX_UNSEEN_PER_ROUND


def test_hearsay_never_sets_a_peers_key():
    table = PeerTable()
    table.heard("127.0.0.3:1")
    table.add("127.0.0.4:1", key_id="k4", source="announce")
    table.heard("127.0.0.4:1")
    assert {p.addr: p.key_id for p in table.all()} == {"127.0.0.3:1": "", "127.0.0.4:1": "k4"}
