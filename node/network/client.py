"""gRPC client helpers: channels with mergenet's message limits, stubs, and error translation.

    with connect("127.0.0.1:7470") as ch:
        info = registry_stub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=5)
    plans_stub.Propose(request, metadata=operator_metadata(home))   # only the node of `home` accepts it

`rpc_error(exc, addr)` turns a grpc.RpcError into a one-sentence PeerError for the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from node.errors import PeerError
from node.process.auth import TOKEN_METADATA_KEY, read_token
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.services.transfer_service import CHUNK_SIZE

# A chunk plus protobuf framing; nothing mergenet sends is bigger, so nothing bigger is accepted.
MAX_MESSAGE_BYTES = CHUNK_SIZE + 64 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
# Short calls (manifests, gossip, info) give up after this long; transfers set their own.
CALL_TIMEOUT_S = 10.0

# gRPC call metadata: (key, value) pairs sent with a call.
Metadata = tuple[tuple[str, str], ...]


@contextmanager
def connect(addr: str) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
    try:
        yield channel
    finally:
        channel.close()


def registry_stub(channel: grpc.Channel) -> pb_grpc.RegistryStub:
    return pb_grpc.RegistryStub(channel)


def transfer_stub(channel: grpc.Channel) -> pb_grpc.TransferStub:
    return pb_grpc.TransferStub(channel)


def operator_metadata(home: Path) -> Metadata:
    """The call metadata that proves to the node running on `home` that its operator calls; NodeError
    when the home holds no usable token. Send it only to that node: the token is its operator's."""
    return ((TOKEN_METADATA_KEY, read_token(home)),)


def rpc_error(exc: grpc.RpcError, addr: str) -> PeerError:
    code = exc.code() if hasattr(exc, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        return PeerError(f"no mergenet node answers at {addr}; start one with `mergenet node start` or pass --node")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PeerError(f"the node at {addr} did not answer in time")
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.PERMISSION_DENIED:  # an operator-only call without this home's token
        return PeerError(f"the node at {addr} refused: {detail}; run the command from that node's home")
    return PeerError(f"the node at {addr} refused the request ({code.name if code else 'error'}: {detail})")


def network_info(addr: str, timeout: float = CALL_TIMEOUT_S) -> pb.NetworkInfo:
    """Who the node at `addr` is, its DHT multiaddrs and held models; PeerError when unreachable."""
    with connect(addr) as ch:
        try:
            return registry_stub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            raise rpc_error(exc, addr) from None
