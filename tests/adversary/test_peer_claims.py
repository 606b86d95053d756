"""Lies about peers, told to a real node over gRPC: a flood of gossiped addresses, a goodbye in a
live peer's name, one ad re-sent under 500 fake senders, and gossip faster than the rate limit."""

from __future__ import annotations

import grpc
import pytest

from node.network.leaving import LeaveChecks
from node.network.peers import MAX_PEERS
from node.network.view import MAX_HOLDERS_LISTED
from registry.services.local_view import LocalView
from registry.services.rate import GOSSIP_BURST, RateLimiter
from tests.adversary.harness import advertise, announce, find_holders, probe_latency, running_node, wait_for

pytestmark = pytest.mark.timeout(120)

# Checks after a goodbye, shortened from node.network.leaving.LEAVE_CHECK_DELAYS_S for the test.
QUICK_CHECKS_S = (0.5, 3.0)
UNLIMITED = RateLimiter(rate_per_s=1e9, burst=1e9)


def fake_addrs(n: int, start: int = 0) -> list[str]:
    """Distinct loopback addresses nothing listens on (a node that dials them gets refused)."""
    return [f"127.0.{i // 250 + 1}.{i % 250 + 1}:{20000 + i % 1000}" for i in range(start, start + n)]


def known(node) -> set[str]:
    return {p.addr for p in node.network.peers.all()}


def contacted(node, addr: str) -> bool:
    return any(p.addr == addr and p.last_seen for p in node.network.peers.all())


def test_a_flood_of_gossiped_addresses_never_evicts_a_peer_that_answers(tmp_path):
    with running_node(tmp_path / "A") as a, running_node(tmp_path / "B", peers=()) as b:
        announce(a.addr, sender=b.addr)  # A hears of B, dials it in its next round: contact
        assert wait_for(lambda: contacted(a, b.addr), 10.0)
        fakes = fake_addrs(5000)
        for i in range(0, len(fakes), 250):
            announce(a.addr, sender=fakes[i], known=fakes[i + 1:i + 250])
        peers = a.network.peers.all()
        assert len(peers) <= MAX_PEERS
        assert b.addr in a.network.peers.good()
        # A newcomer that shows up after the flood still gets in (the table evicts hearsay for it).
        with running_node(tmp_path / "C", peers=(a.addr,)) as c:
            assert wait_for(lambda: c.addr in known(a), 10.0)
            assert len(a.network.peers.all()) <= MAX_PEERS and b.addr in a.network.peers.good()


def test_a_goodbye_in_a_live_peers_name_is_ignored_and_a_real_one_honoured(held, tmp_path):
    with running_node(tmp_path / "A") as a:
        a.network.leaving = LeaveChecks(a.network.forget, delays_s=QUICK_CHECKS_S)
        with running_node(held.home, peers=(a.addr,)) as b:
            assert wait_for(lambda: find_holders(a.addr, held.model_id) == [b.addr], 10.0)
            announce(a.addr, sender=b.addr, leaving=True)  # forged: B is alive and said nothing
            assert b.addr in a.network.leaving.pending()
            assert wait_for(lambda: not a.network.leaving.pending(), sum(QUICK_CHECKS_S) + 5)
            assert find_holders(a.addr, held.model_id) == [b.addr] and b.addr in a.network.peers.good()
        # B stopped and said goodbye itself: A forgets it once it no longer answers.
        assert wait_for(lambda: find_holders(a.addr, held.model_id) == [], sum(QUICK_CHECKS_S) + 5)
        assert b.addr not in [p.addr for p in a.network.peers.all()]


def test_one_ad_under_500_fake_senders_lists_capped_holders_real_one_first(held, tmp_path):
    from node.transfer.pull import pull_from_network
    from registry.local import LocalRegistry

    ad = LocalView.open(held.home).ad(held.model_id)
    with running_node(tmp_path / "A", gossip_rate=UNLIMITED) as a, running_node(held.home, peers=(a.addr,)) as b:
        assert wait_for(lambda: find_holders(a.addr, held.model_id) == [b.addr], 10.0)
        # A's jobs pull through A's peer table: B serves verified bytes, which ranks it first.
        scratch = LocalRegistry(tmp_path / "scratch")
        try:
            pull_from_network(scratch, held.model_id, tmp_path / "out", [b.addr], peers=a.network.peers)
        finally:
            scratch.close()
        assert advertise(a.addr, fake_addrs(500), ad) == 500  # the ad itself is genuine
        holders = find_holders(a.addr, held.model_id)
        assert len(holders) <= MAX_HOLDERS_LISTED and holders[0] == b.addr


def test_gossip_past_the_rate_limit_is_refused_and_the_node_keeps_answering(tmp_path):
    with running_node(tmp_path / "A") as a:
        codes = []
        for sender in fake_addrs(int(GOSSIP_BURST) * 2):
            try:
                announce(a.addr, sender=sender)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes[:int(GOSSIP_BURST) // 2].count(grpc.StatusCode.OK) == int(GOSSIP_BURST) // 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= GOSSIP_BURST // 2
        assert probe_latency(a.addr) < 5.0
