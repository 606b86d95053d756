"""Registry servicer: advertise, list and describe models; peer gossip; how to join the DHT.

    RegistryServicer(view=LocalView(home), hooks=node_hooks)   # gossip_rate: default RateLimiter()

Local questions (what do I hold, give me its manifest) are answered from this node's registry
through `LocalView`; network questions go to the node's `NetworkHooks`. Every request is
validated here: ids must be `sha256:<64 hex>`, ads must verify, lists are capped. Gossip
(Announce, Advertise) is rate-limited per client host: past the bucket, RESOURCE_EXHAUSTED
before anything in the request is looked at.
"""

from __future__ import annotations

import logging

import grpc

from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.errors import BadIdError
from registry.ids import ModelId
from registry.manifest import KINDS as MODEL_KINDS
from registry.services import convert
from registry.services.ads import verify_ad
from registry.services.hooks import NetworkHooks
from registry.services.limits import client_host
from registry.services.local_view import LocalView
from registry.services.rate import RateLimiter

log = logging.getLogger(__name__)

# One request may carry at most this many ads / gossip entries / ids.
MAX_ITEMS_PER_REQUEST = 256
KINDS = ("", *MODEL_KINDS)

def _model_id_or_abort(text: str, context: grpc.ServicerContext) -> ModelId:
    try:
        return ModelId.parse(text)
    except BadIdError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    raise AssertionError("abort raises")  # pragma: no cover

def _cap(items: list, what: str, context: grpc.ServicerContext) -> list:
    if len(items) > MAX_ITEMS_PER_REQUEST:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"too many {what} ({len(items)} > {MAX_ITEMS_PER_REQUEST})")
    return items

class RegistryServicer(pb_grpc.RegistryServicer):
    """:param gossip_rate: the per-client-host bucket for Announce and Advertise"""

    def __init__(self, view: LocalView, hooks: NetworkHooks, gossip_rate: RateLimiter | None = None) -> None:
        self._view = view
        self._hooks = hooks
        self._gossip_rate = gossip_rate or RateLimiter()

    def _limit_gossip(self, context: grpc.ServicerContext) -> None:
        client = client_host(context.peer())
        if not self._gossip_rate.allow(client):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"too much gossip from {client}: at most {self._gossip_rate.rate_per_s:g} "
                          f"Announce/Advertise calls per second; slow down")

    def Advertise(self, request: pb.AdvertiseRequest, context: grpc.ServicerContext) -> pb.AdvertiseReply:
        self._limit_gossip(context)
        sender = convert.peer_from_pb(request.sender)
        ads = _cap(list(request.models), "ads", context)
        good, rejected = [], 0
        for msg in ads:
            try:
                good.append(verify_ad(convert.ad_from_pb(msg)))
            except Exception as exc:  # a forged or garbled ad, whatever breaks, is dropped; the rest count
                log.info("dropped advertisement from %s: %s", sender.grpc_addr or context.peer(), exc)
                rejected += 1
        if good and sender.grpc_addr:
            self._hooks.accept_ads(sender, good)
        return pb.AdvertiseReply(accepted=len(good), rejected=rejected)

    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListReply:
        if request.kind not in KINDS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"kind {request.kind!r} is not one of {', '.join(MODEL_KINDS)}")
        kind = request.kind or None
        rows = {s.model_id: s for s in self._view.summaries(kind)}
        if request.include_remote:  # the network's rows carry holders, local ones included
            rows.update({s.model_id: s for s in self._hooks.remote_models(kind)})
        return pb.ListReply(models=[convert.summary_to_pb(s) for s in rows.values()])

    def GetManifest(self, request: pb.GetManifestRequest, context: grpc.ServicerContext) -> pb.ModelAd:
        model_id = _model_id_or_abort(request.model_id, context)
        ad = self._view.ad(model_id)
        if ad is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"this node does not hold {model_id}")
        return convert.ad_to_pb(ad)

    def Announce(self, request: pb.AnnounceRequest, context: grpc.ServicerContext) -> pb.AnnounceReply:
        self._limit_gossip(context)
        known = [convert.peer_from_pb(p) for p in _cap(list(request.known), "peers", context)]
        if request.leaving:
            self._hooks.peer_left(convert.peer_from_pb(request.sender))
            return pb.AnnounceReply()
        answer = self._hooks.exchange_peers(convert.peer_from_pb(request.sender), known)
        return pb.AnnounceReply(known=[convert.peer_to_pb(p) for p in answer])

    def GetNetworkInfo(self, request: pb.NetworkInfoRequest, context: grpc.ServicerContext) -> pb.NetworkInfo:
        return convert.state_to_pb(self._hooks.network_state(), self._view.ids())

    def Notify(self, request: pb.NotifyRequest, context: grpc.ServicerContext) -> pb.NotifyReply:
        ids = [_model_id_or_abort(i, context) for i in _cap(list(request.model_ids), "ids", context)]
        held = set(self._view.ids())
        known = [i for i in ids if i in held]
        if known:
            self._hooks.models_changed(known)
        return pb.NotifyReply(known=len(known))

    def FindHolders(self, request: pb.FindHoldersRequest, context: grpc.ServicerContext) -> pb.FindHoldersReply:
        model_id = _model_id_or_abort(request.model_id, context)
        return pb.FindHoldersReply(holders=self._hooks.holders(model_id))
