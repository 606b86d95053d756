"""What client commands (`ls --remote`, `show ID`, `submit`) ask the local node, as plain dicts.

    list_remote("127.0.0.1:7470")              # every model the network offers
    show_remote("127.0.0.1:7470", model_id)    # a verified manifest from some holder, or None
    notify_submitted("127.0.0.1:7470", model_id, operator_metadata(home))  # best effort: False when
                                                    # no node listens or it refuses the credential

These are the functions the registry commands call; everything else about the network stays
behind them.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from node.network.client import CALL_TIMEOUT_S, Metadata, connect, registry_stub, rpc_error
from protos import mergenet_pb2 as pb
from registry.errors import RegistryError
from registry.services import convert
from registry.services.ads import verify_ad

NOTIFY_TIMEOUT_S = 2.0
# Listing the network may fetch manifests from several peers.
LIST_TIMEOUT_S = 30.0


def list_remote(node_addr: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Models held by the node and anywhere it can see; PeerError when no node answers."""
    with connect(node_addr) as ch:
        try:
            reply = registry_stub(ch).List(pb.ListRequest(kind=kind or "", include_remote=True),
                                           timeout=LIST_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise rpc_error(exc, node_addr) from None
    return [{"id": m.model_id, "name": m.name, "kind": m.kind, "publisher": m.publisher_key_id, "size": m.size,
             "local": m.local, "holders": list(m.holders)} for m in reply.models]


def show_remote(node_addr: str, model_id: str) -> dict[str, Any] | None:
    """The verified manifest of a model held somewhere in the network, or None if nobody has it."""
    with connect(node_addr) as ch:
        stub = registry_stub(ch)
        try:
            holders = list(stub.FindHolders(pb.FindHoldersRequest(model_id=model_id), timeout=LIST_TIMEOUT_S).holders)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return None
            raise rpc_error(exc, node_addr) from None
    for addr in [node_addr, *[h for h in holders if h != node_addr]]:
        try:
            with connect(addr) as ch:
                msg = registry_stub(ch).GetManifest(pb.GetManifestRequest(model_id=model_id), timeout=CALL_TIMEOUT_S)
            ad = verify_ad(convert.ad_from_pb(msg))
        except (grpc.RpcError, RegistryError):
            continue
        return {"id": ad.model_id, "manifest": json.loads(ad.ad.manifest), "signer": ad.key_id,
                "files": {p: {"sha256": d, "size": s} for p, d, s in ad.ad.files},
                "attestations": [a.decode("utf-8", "replace") for a in ad.ad.attestations], "holders": holders}
    return None


def notify_submitted(node_addr: str, model_id: str, credential: Metadata = ()) -> bool:
    """Tell the local node a model was just stored in its home so it advertises it; never raises.
    Notify is operator-only: `credential` is `operator_metadata(home)` of the node's home."""
    try:
        with connect(node_addr) as ch:
            reply = registry_stub(ch).Notify(pb.NotifyRequest(model_ids=[model_id]), timeout=NOTIFY_TIMEOUT_S,
                                             metadata=credential)
    except (grpc.RpcError, ValueError):
        return False
    return reply.known > 0
