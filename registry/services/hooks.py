"""What the Registry servicer needs from the running node, as plain Python types.

The servicer lives in `registry/` and may not import `node/`; the node passes an object with
these methods (`node.process.daemon.NodeHooks`). Everything that reaches them has been decoded from
protobuf but NOT verified beyond `verify_ad` for ads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from registry.services.ads import VerifiedAd


@dataclass(frozen=True)
class PeerRef:
    grpc_addr: str
    key_id: str = ""
    version: str = ""


@dataclass(frozen=True)
class ModelSummary:
    """One row of a listing."""

    model_id: str
    name: str = ""
    kind: str = ""
    publisher_key_id: str = ""
    size: int = 0
    local: bool = False
    holders: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkState:
    node: PeerRef
    dht_maddrs: tuple[str, ...] = ()
    capacity: dict[str, int] = field(default_factory=dict)
    peer_count: int = 0


class NetworkHooks(Protocol):
    def exchange_peers(self, sender: PeerRef, known: list[PeerRef]) -> list[PeerRef]:
        """Record a gossiping peer and whom it knows; return whom we know."""

    def peer_left(self, sender: PeerRef) -> None:
        """Someone claims `sender` is shutting down (anyone can send this): act on it only once
        the peer itself confirms, e.g. by no longer answering at its address."""

    def accept_ads(self, sender: PeerRef, ads: list[VerifiedAd]) -> None:
        """Remember verified ads a peer pushed: the sender holds these models."""

    def remote_models(self, kind: str | None) -> list[ModelSummary]:
        """Models in the network (DHT + peers), signatures verified, with their holders; models
        held here too are listed with this node among their holders."""

    def holders(self, model_id: str) -> list[str]:
        """gRPC addresses believed to hold a model, best first (the best evidence first), capped."""

    def network_state(self) -> NetworkState: ...

    def models_changed(self, model_ids: list[str]) -> None:
        """A local client stored models in our home: announce them."""
