"""protobuf ⇄ domain types, in one place so no other module touches generated classes' fields."""

from __future__ import annotations

from protos import mergenet_pb2 as pb
from registry.services.ads import SignedAd
from registry.services.hooks import ModelSummary, NetworkState, PeerRef


def ad_to_pb(ad: SignedAd) -> pb.ModelAd:
    return pb.ModelAd(model_id=ad.model_id, manifest=ad.manifest, signature=ad.signature,
                      files=[pb.FileEntry(path=p, sha256=d, size=s) for p, d, s in ad.files],
                      attestations=list(ad.attestations))


def ad_from_pb(msg: pb.ModelAd) -> SignedAd:
    return SignedAd(model_id=msg.model_id, manifest=bytes(msg.manifest), signature=bytes(msg.signature),
                    files=tuple((f.path, f.sha256, int(f.size)) for f in msg.files),
                    attestations=tuple(bytes(a) for a in msg.attestations))


def peer_to_pb(peer: PeerRef) -> pb.PeerInfo:
    return pb.PeerInfo(grpc_addr=peer.grpc_addr, key_id=peer.key_id, version=peer.version)


def peer_from_pb(msg: pb.PeerInfo) -> PeerRef:
    return PeerRef(grpc_addr=msg.grpc_addr, key_id=msg.key_id, version=msg.version)


def summary_to_pb(s: ModelSummary) -> pb.ModelEntry:
    return pb.ModelEntry(model_id=s.model_id, name=s.name, kind=s.kind, publisher_key_id=s.publisher_key_id,
                         local=s.local, holders=list(s.holders), size=s.size)


def state_to_pb(state: NetworkState, model_ids: list[str]) -> pb.NetworkInfo:
    cap = state.capacity
    return pb.NetworkInfo(
        node=peer_to_pb(state.node), dht_maddrs=list(state.dht_maddrs), peer_count=state.peer_count,
        model_ids=model_ids,
        capacity=pb.Capacity(cpus=cap.get("cpus", 0), memory_bytes=cap.get("memory_bytes", 0),
                             gpus=cap.get("gpus", 0), gpu_memory_bytes=cap.get("gpu_memory_bytes", 0)),
    )
