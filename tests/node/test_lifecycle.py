"""The node's lifecycle, in-process: the port is bound before anything is built, every part
knows the real address from the start, and `stop` ends every thread `start` began."""

from __future__ import annotations

import logging
import threading

import grpc
import pytest

from node.errors import NodeError
from node.network.client import connect, registry_stub
from node.process.config import NodeConfig
from node.process.daemon import Node, read_node_file
from protos import mergenet_pb2 as pb


def _loops() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in ("announce", "plans") and t.is_alive()}


def test_start_builds_with_the_real_address_and_stop_ends_every_loop(tmp_path):
    node = Node(NodeConfig(home=tmp_path / "home", listen="127.0.0.1:0", dht=False))
    node.start()
    try:
        port = int(node.addr.rsplit(":", 1)[1])
        assert port > 0 and node.network.self_ref.grpc_addr == node.addr
        assert node.network.peers.self_addr == node.addr and node.plans.engine.config.address == node.addr
        assert _loops() == {"announce", "plans"}
        assert read_node_file(tmp_path / "home")["addr"] == node.addr
        with connect(node.addr) as ch:
            info = registry_stub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=5)
        assert info.node.grpc_addr == node.addr
    finally:
        node.stop()
    assert _loops() == set() and read_node_file(tmp_path / "home") is None
    node.stop()  # twice is harmless
    with connect(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError):
        registry_stub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=1)


def test_a_taken_port_fails_start_and_leaves_nothing_running(tmp_path):
    first = Node(NodeConfig(home=tmp_path / "a", listen="127.0.0.1:0", dht=False))
    first.start()
    try:
        second = Node(NodeConfig(home=tmp_path / "b", listen=first.addr, dht=False))
        with pytest.raises(NodeError, match="cannot listen"):
            second.start()
        assert _loops() == {"announce", "plans"}  # only the first node's
        assert read_node_file(tmp_path / "b") is None
        files = [str(getattr(h, "baseFilename", "")) for h in logging.getLogger().handlers]
        assert not [f for f in files if f.startswith(str(tmp_path / "b"))]
    finally:
        first.stop()
