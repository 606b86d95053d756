"""How the plan engine reaches the network on a real node: flood statements to known peers over
gRPC (in the background, so a slow peer never stalls a handler), and look up input manifests
locally or from holders.

    transport = GrpcTransport(peers)           # engine.transport
    resolver = NodeResolver(home, network)     # engine.resolver
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from node.plans import proof
from node.plans.errors import PlanInputError
from node.plans.model import canonical_json
from node.plans.rules import InputInfo

log = logging.getLogger(__name__)

# The RPC of the Plans service that carries each statement kind.
METHODS = {"plan": "Offer", "consent": "Consent", "bid": "Bid", "commit": "Commit", "result": "Report",
           "attestation": "Attest", "heartbeat": "Heartbeat"}
SEND_TIMEOUT_S = 5.0
SEND_WORKERS = 4


class GrpcTransport:
    """Sends each statement to the peers an announce round dials (those that answered us, the
    operator's, and at most `MAX_UNSEEN_PER_ROUND` hearsay addresses), except the one it came
    from: a flood of gossiped addresses must not turn every statement into a thousand calls."""

    def __init__(self, peers: Any, self_addr: Any = lambda: "") -> None:
        self.peers = peers
        self.self_addr = self_addr
        self._pool = ThreadPoolExecutor(max_workers=SEND_WORKERS, thread_name_prefix="plans-send")

    def broadcast(self, kind: str, bundle: Mapping[str, Any], exclude: str | None = None) -> None:
        data = canonical_json(dict(bundle))
        for addr in self.peers.round_targets():
            if addr not in (exclude, self.self_addr()):
                self._pool.submit(self._send, addr, kind, data)

    def _send(self, addr: str, kind: str, data: bytes) -> None:
        import grpc

        from node.network.client import connect
        from protos import mergenet_pb2 as pb
        from protos import mergenet_pb2_grpc as pb_grpc

        try:
            with connect(addr) as ch:
                rpc = getattr(pb_grpc.PlansStub(ch), METHODS[kind])
                rpc(pb.PlanStatement(bundle=data, sender=self.self_addr()), timeout=SEND_TIMEOUT_S)
        except grpc.RpcError as exc:
            log.info("could not send a %s to %s: %s", kind, addr, exc.code())

    def prove(self, address: str, key_id: str) -> bool:
        """Whether the node at `address` signs a fresh nonce with the key `key_id`."""
        import grpc

        from node.network.client import connect
        from protos import mergenet_pb2 as pb
        from protos import mergenet_pb2_grpc as pb_grpc

        nonce = proof.new_nonce()
        try:
            with connect(address) as ch:
                reply = pb_grpc.PlansStub(ch).Prove(pb.ProveRequest(nonce=nonce), timeout=SEND_TIMEOUT_S)
        except grpc.RpcError as exc:
            log.info("address challenge to %s failed: %s", address, exc.code())
            return False
        return proof.check(reply.public_key_pem, reply.signature, nonce, key_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _info(model_id: str, manifest: Any) -> InputInfo:
    """Policy facts from a signed manifest: a merged model names, in its provenance, the
    original publishers whose consent its own derivatives need."""
    from registry.errors import BadModelError
    from registry.provenance import Provenance

    consenters: tuple[str, ...] = ()
    if manifest.kind == "merged" and manifest.provenance is not None:
        try:
            consenters = Provenance.from_dict(manifest.provenance).consent_keys
        except BadModelError:
            consenters = ()
    size = sum(int(v) for v in (manifest.sizes or {}).values())
    return InputInfo(model_id, manifest.policy, manifest.license or "", manifest.publisher_key_id,
                     consenters or (manifest.publisher_key_id,), size)


class NodeResolver:
    """Input facts from signed manifests: the local registry first, else a verified remote ad."""

    def __init__(self, home: Path, network: Any = None) -> None:
        self.home = home
        self.network = network

    def local_info(self, model_id: str) -> InputInfo | None:
        from registry.errors import RegistryError
        from registry.local import LocalRegistry

        registry = LocalRegistry(self.home)
        try:
            return _info(model_id, registry.get(model_id).manifest)
        except RegistryError:
            return None
        finally:
            registry.close()

    def input_info(self, model_id: str) -> InputInfo:
        local = self.local_info(model_id)
        if local is not None:
            return local
        ad = None
        if self.network is not None:
            # Holders known from the DHT and ads first, then the peers a round dials: ads travel
            # only once a minute.
            holders = list(dict.fromkeys([*self.network.holders(model_id), *self.network.peers.round_targets()]))
            ad = self.network.fetch_ad(model_id, holders)
        if ad is None:
            raise PlanInputError(f"model {model_id} is neither held by this node nor offered by any known peer; "
                                 "check the id with `mergenet ls --remote`")
        return _info(model_id, ad.manifest)


def parse_bundle(data: bytes, limit: int) -> dict[str, Any]:
    """A statement bundle from wire bytes; PlanInputError when oversized or not a JSON object."""
    if len(data) > limit:
        raise PlanInputError(f"statement of {len(data)} bytes is larger than the {limit}-byte limit")
    try:
        bundle = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PlanInputError("statement is not JSON") from None
    if not isinstance(bundle, dict):
        raise PlanInputError("statement is not a JSON object")
    return bundle
