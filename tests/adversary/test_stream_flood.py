"""A stream flood against a real node: Transfer streams that are never read. Health and the
registry keep answering, the flood's streams are refused (RESOURCE_EXHAUSTED) or cut after the
send timeout (CANCELLED), and an honest pull completes once they are gone."""

from __future__ import annotations

import grpc
import pytest

from registry.services.limits import StreamSlots
from tests.adversary.harness import open_unread_streams, probe_latency, running_node, wait_for
from tests.node.netutil import folder_bytes

pytestmark = pytest.mark.timeout(120)

FLOOD = 32
# Generous: on an idle machine a probe takes milliseconds; before the slots it never returned.
PROBE_BOUND_S = 5.0
SEND_TIMEOUT_S = 2.0


def test_unread_streams_neither_freeze_the_node_nor_outlive_the_send_timeout(held, tmp_path):
    from node.network.peers import PeerTable
    from node.transfer.pull import pull_from_network
    from registry.local import LocalRegistry

    # Every stream here comes from 127.0.0.1, so the per-client cap is raised to the total cap
    # to flood the whole Transfer pool (the per-client cap has its own test below).
    slots = StreamSlots(total=8, per_client=8, send_timeout_s=SEND_TIMEOUT_S)
    with running_node(held.home, transfer=slots) as node:
        flood = open_unread_streams(node.addr, held.weights_digest, FLOOD)
        try:
            assert wait_for(lambda: slots.in_use() == slots.total, 10.0), "the flood never filled the slots"
            assert probe_latency(node.addr) < PROBE_BOUND_S
            assert flood.codes(timeout_s=2.0).count(grpc.StatusCode.RESOURCE_EXHAUSTED) == FLOOD - slots.total
            # The reader never reads: within a few send timeouts the server cuts every stream.
            assert wait_for(lambda: slots.in_use() == 0, SEND_TIMEOUT_S * 5)
            assert probe_latency(node.addr) < PROBE_BOUND_S
            codes = flood.drain()
        finally:
            flood.close()
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == FLOOD - slots.total
        assert codes.count(grpc.StatusCode.CANCELLED) == slots.total  # cut by the send timeout

        registry = LocalRegistry(tmp_path / "puller")
        peers = PeerTable()
        try:
            result = pull_from_network(registry, held.model_id, tmp_path / "out", [node.addr], peers=peers)
        finally:
            registry.close()
        assert result.sources == (node.addr,) and not peers.is_bad(node.addr)
        assert folder_bytes(tmp_path / "out") == folder_bytes(held.folder)


def test_one_client_gets_at_most_its_share_of_streams(held):
    slots = StreamSlots(total=16, per_client=4, send_timeout_s=30.0)
    with running_node(held.home, transfer=slots) as node:
        flood = open_unread_streams(node.addr, held.weights_digest, 10)
        try:
            codes = flood.codes(timeout_s=5.0)
            assert slots.in_use() == 4
            assert probe_latency(node.addr) < PROBE_BOUND_S
        finally:
            flood.close()
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 6 and codes.count(None) == 4
