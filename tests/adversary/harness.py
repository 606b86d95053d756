"""A hostile peer against real in-process nodes on 127.0.0.1: start a node with chosen bounds,
open Transfer streams that are never read, send gossip under any sender's name, time the calls
an honest operator depends on.

    with running_node(home, transfer=StreamSlots(send_timeout_s=2)) as node:
        streams = open_unread_streams(node.addr, digest, 32)
        assert probe_latency(node.addr) < 5
        announce(node.addr, sender="127.0.0.1:9", leaving=True)   # a goodbye in someone's name
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.network.client import CHANNEL_OPTIONS, connect, registry_stub
from node.process import services
from node.process.config import NodeConfig
from node.process.daemon import Node
from node.process.server import ServiceSpec
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.services import convert
from registry.services.ads import SignedAd
from registry.services.limits import StreamSlots
from registry.services.rate import RateLimiter
from registry.services.registry_service import RegistryServicer
from registry.services.transfer_service import TransferServicer


def _specs(transfer: StreamSlots | None, gossip_rate: RateLimiter | None) -> tuple[ServiceSpec, ...]:
    def add_transfer(server: grpc.Server, node: Node) -> None:
        pb_grpc.add_TransferServicer_to_server(TransferServicer(node.view.blob_path, transfer), server)

    def add_registry(server: grpc.Server, node: Node) -> None:
        pb_grpc.add_RegistryServicer_to_server(RegistryServicer(node.view, node.network, gossip_rate), server)

    return (ServiceSpec(services.REGISTRY_SERVICE.name, add_registry),
            ServiceSpec(services.TRANSFER_SERVICE.name, add_transfer), services.PLANS_SERVICE)


@contextmanager
def running_node(home: Path, transfer: StreamSlots | None = None, gossip_rate: RateLimiter | None = None,
                 listen: str = "127.0.0.1:0", peers: tuple[str, ...] = ()) -> Iterator[Node]:
    """A real node without DHT whose Transfer and Registry servicers use the given bounds (None:
    the product's defaults)."""
    node = Node(NodeConfig(home=home, listen=listen, dht=False, peers=peers), services=_specs(transfer, gossip_rate))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@dataclass
class UnreadStreams:
    """Transfer streams opened and never read, each on its own connection."""

    channels: list[grpc.Channel] = field(default_factory=list)
    calls: list[grpc.Call] = field(default_factory=list)

    def codes(self, timeout_s: float) -> list[grpc.StatusCode | None]:
        """How each call ended (None: still open after `timeout_s`), without reading a message.
        A stream the server cut shows as open until its buffered bytes are read: see `drain`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(c.is_active() for c in self.calls):
            time.sleep(0.1)
        return [None if c.is_active() else c.code() for c in self.calls]

    def drain(self) -> list[grpc.StatusCode]:
        """Read every call to its end (a stream still served is read whole) and return its status."""
        codes = []
        for call in self.calls:
            try:
                for _ in call:
                    pass
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        return codes

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


# A hostile reader's connection: its own TCP connection per stream, and a fixed 64 KiB window
# (no BDP probing growing it), so the server's first 1 MiB chunk can never be delivered.
UNREAD_OPTIONS = (*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0),
                  ("grpc.http2.lookahead_bytes", 64 * 1024))


def open_unread_streams(addr: str, digest: str, n: int) -> UnreadStreams:
    flood = UnreadStreams()
    for _ in range(n):
        channel = grpc.insecure_channel(addr, options=UNREAD_OPTIONS)
        flood.channels.append(channel)
        flood.calls.append(pb_grpc.TransferStub(channel).Fetch(pb.FetchRequest(digest=digest)))
    return flood


def probe_latency(addr: str, timeout_s: float = 30.0) -> float:
    """Seconds a health Check plus a GetNetworkInfo take on a fresh connection."""
    start = time.monotonic()
    with connect(addr) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        registry_stub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=timeout_s)
    return time.monotonic() - start


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def announce(addr: str, sender: str, known: Sequence[str] = (), leaving: bool = False) -> pb.AnnounceReply:
    """One Announce claiming to come from `sender`, naming `known` peers."""
    request = pb.AnnounceRequest(sender=pb.PeerInfo(grpc_addr=sender), leaving=leaving,
                                 known=[pb.PeerInfo(grpc_addr=k) for k in known])
    with connect(addr) as ch:
        return registry_stub(ch).Announce(request, timeout=10)


def advertise(addr: str, senders: Sequence[str], ad: SignedAd) -> int:
    """Push the same ad once under each sender's name over one connection; how many were accepted."""
    msg = convert.ad_to_pb(ad)
    with connect(addr) as ch:
        stub = registry_stub(ch)
        return sum(stub.Advertise(pb.AdvertiseRequest(sender=pb.PeerInfo(grpc_addr=s), models=[msg]),
                                  timeout=10).accepted for s in senders)


def find_holders(addr: str, model_id: str) -> list[str]:
    with connect(addr) as ch:
        return list(registry_stub(ch).FindHolders(pb.FindHoldersRequest(model_id=model_id), timeout=10).holders)
