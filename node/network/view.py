"""The node's view of the network: peers (gossip), DHT records, and verified ads of remote models.

    net = Network(self_ref, view, peers, discovery)   # NetworkHooks for the Registry servicer
    net.announce_once()      # DHT announce + gossip + push our ads to peers (the announce loop)
    net.greet_newcomers()    # the same for peers met since, only them (the loop, woken early)
    net.holders(model_id)    # gRPC addresses to pull from, best first, at most MAX_HOLDERS_LISTED

Nothing a peer says is trusted: ads are kept only after `verify_ad`; DHT records are signed by
hivemind's validator and still parsed defensively; a peer whose ad does not verify is marked bad.
Holders are ranked by evidence: holders that served this node verified bytes first, then those
with a signed DHT record, then those that only advertised (earliest first); ad claimants per
model are bounded. A goodbye is only a claim: `LeaveChecks` forgets a peer once it stops answering.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc

from node.network.client import CALL_TIMEOUT_S, connect, registry_stub
from node.network.dht_records import RECORD_EXPIRY_S, NodeRecord
from node.network.leaving import LeaveChecks
from node.network.peers import PeerTable
from protos import mergenet_pb2 as pb
from registry.errors import RegistryError
from registry.services import convert
from registry.services.ads import VerifiedAd, verify_ad
from registry.services.hooks import ModelSummary, NetworkState, PeerRef
from registry.services.local_view import LocalView

if TYPE_CHECKING:
    from node.network.discovery import Discovery

log = logging.getLogger(__name__)

# Gossip and ad pushes are short; a slow peer must not stall the announce loop.
GOSSIP_TIMEOUT_S = 3.0
GOSSIP_WORKERS = 8
GOODBYE_TIMEOUT_S = 1.0
MAX_CACHED_ADS = 4096
# One listing fetches at most this many unknown manifests, so a peer claiming thousands of
# models cannot make a listing take forever.
MAX_MANIFEST_FETCHES_PER_LIST = 32
# FindHolders and listings name at most this many holders of one model; at most this many
# holders that only advertised a model are remembered for it (the least recently advertised
# one that never served us verified bytes makes room for a newcomer).
MAX_HOLDERS_LISTED = 16
MAX_AD_HOLDERS_PER_MODEL = 32
# Half the gRPC message limit: an Advertise request carries as many ads as fit in this.
ADVERTISE_BATCH_BYTES = 512 * 1024
# Peers met between rounds wait here to be greeted (our Announce and ads) without a full round;
# bounded, so a flood of fresh sender addresses costs at most this many dials per wake-up.
MAX_PENDING_GREETS = 32


def local_capacity() -> dict[str, int]:
    import psutil

    return {"cpus": os.cpu_count() or 1, "memory_bytes": int(psutil.virtual_memory().total), "gpus": 0,
            "gpu_memory_bytes": 0}


class Network:
    def __init__(self, self_ref: PeerRef, view: LocalView, peers: PeerTable, discovery: Discovery | None) -> None:
        self.self_ref = self_ref
        self.view = view
        self.peers = peers
        self.discovery = discovery
        self.capacity = local_capacity()
        self.announce_now = threading.Event()  # wakes the announce loop: see full_round_wanted
        self._lock = threading.Lock()
        self._full_round = False
        self._greet: dict[str, None] = {}
        self._ads: dict[str, VerifiedAd] = {}
        # model id → holder → (when it first advertised it, when it last did)
        self._ad_holders: dict[str, dict[str, tuple[float, float]]] = {}
        self.leaving = LeaveChecks(on_gone=self.forget)

    # -- NetworkHooks -------------------------------------------------------------------------

    def _add_peer(self, addr: str, key_id: str = "", version: str = "", source: str = "gossip") -> bool:
        """PeerTable.add (the peer names itself) that logs a newcomer (True when it was new)."""
        new = self.peers.add(addr, key_id, version, source=source)
        if new:
            log.info("peer joined: %s (key %s, via %s)", addr, key_id[:16] or "?", source,
                     extra={"peer": addr, "key_id": key_id or None})
        return new

    def _heard(self, addr: str) -> bool:
        """PeerTable.heard (a third party names it) that logs a newcomer."""
        new = self.peers.heard(addr)
        if new:
            log.info("peer joined: %s (heard of via gossip)", addr, extra={"peer": addr})
        return new

    def exchange_peers(self, sender: PeerRef, known: list[PeerRef]) -> list[PeerRef]:
        if sender.grpc_addr:
            self._add_peer(sender.grpc_addr, sender.key_id, sender.version, source="announce")
            # Never in contact (new, or only named by a third party): push it our ads now rather
            # than in a minute. Not "only when new": a peer may be heard of before it calls.
            # A peer we had given up on that calls again (restarted) is greeted too, back-off or not.
            if not self.peers.contacted(sender.grpc_addr) or self.peers.failing(sender.grpc_addr):
                self._want_greet(sender.grpc_addr)
        for peer in known:
            self._heard(peer.grpc_addr)
        return [PeerRef(p.addr, p.key_id, p.version) for p in self.peers.gossip() if p.addr != sender.grpc_addr]

    def peer_left(self, sender: PeerRef) -> None:
        self.leaving.claim(sender.grpc_addr)

    def forget(self, addr: str) -> None:
        """A peer is gone (it said so and stopped answering): drop it and its ads."""
        log.info("peer left: %s", addr, extra={"peer": addr})
        self.peers.remove(addr)
        with self._lock:
            for holders in self._ad_holders.values():
                holders.pop(addr, None)

    def _fresh_ad_holders(self, model_id: str) -> list[str]:
        """Holders whose ads are younger than the DHT record expiry (ads are re-pushed each round),
        those that advertised the model first, first."""
        cutoff = time.time() - RECORD_EXPIRY_S
        with self._lock:
            fresh = [(first, a) for a, (first, last) in self._ad_holders.get(model_id, {}).items() if last > cutoff]
        return [a for _, a in sorted(fresh)]

    def _rank(self, local: list[str], signed: list[str], claimed: list[str]) -> list[str]:
        """Holders best first, at most MAX_HOLDERS_LISTED: ourselves; those that served us verified
        bytes (latest first); those with a signed DHT record; those that only advertised; known-bad
        peers after all good ones."""
        others = list(dict.fromkeys([*signed, *claimed]))
        served = {a: t for a in others if (t := self.peers.served_at(a))}
        proven = sorted(served, key=served.__getitem__, reverse=True)
        ranked = [*local, *proven, *(a for a in others if a not in served)]
        return self.peers.order(ranked)[:MAX_HOLDERS_LISTED]

    def accept_ads(self, sender: PeerRef, ads: list[VerifiedAd]) -> None:
        self._add_peer(sender.grpc_addr, sender.key_id, sender.version, source="advertise")
        for ad in ads:
            self._remember(ad, sender.grpc_addr)

    def remote_models(self, kind: str | None) -> list[ModelSummary]:
        local = set(self.view.ids())
        signed: dict[str, list[str]] = {}
        if self.discovery is not None:
            for record in self.discovery.find_nodes():
                if record.addr == self.self_ref.grpc_addr:
                    continue
                self._add_peer(record.addr, record.key_id, record.version, source="dht")
                for model_id in record.models:
                    signed.setdefault(model_id, []).append(record.addr)
        with self._lock:
            advertised = list(self._ad_holders)
        # Models held here are listed too, with this node first among their holders: a listing
        # that left them out made a model every node holds show `holders=0` on each of them.
        rows = [replace(s, holders=tuple(self._rank([self.self_ref.grpc_addr], signed.get(s.model_id, []),
                                                     self._fresh_ad_holders(s.model_id))))
                for s in self.view.summaries(kind)]
        fetches = 0
        for model_id in dict.fromkeys([*signed, *advertised]):
            holders = self._rank([], signed.get(model_id, []), self._fresh_ad_holders(model_id))
            if model_id in local or not holders:
                continue
            ad = self._ads.get(model_id)
            if ad is None and fetches < MAX_MANIFEST_FETCHES_PER_LIST:  # the rest on the next listing
                fetches += 1
                ad = self.fetch_ad(model_id, holders)
            if ad is None:
                continue
            summary = _summary(ad, holders=tuple(holders))
            if kind is None or summary.kind == kind:
                rows.append(summary)
        return rows

    def holders(self, model_id: str) -> list[str]:
        local = [self.self_ref.grpc_addr] if model_id in set(self.view.ids()) else []
        signed = self.discovery.find_holders(model_id) if self.discovery is not None else []
        return self._rank(local, signed, self._fresh_ad_holders(model_id))

    def network_state(self) -> NetworkState:
        maddrs = tuple(self.discovery.maddrs()) if self.discovery is not None else ()
        return NetworkState(node=self.self_ref, dht_maddrs=maddrs, capacity=dict(self.capacity),
                            peer_count=len(self.peers.good()))

    def models_changed(self, model_ids: list[str]) -> None:
        with self._lock:
            self._full_round = True
        self.announce_now.set()

    def _want_greet(self, addr: str) -> None:
        if self.peers.is_banned(addr):
            return
        with self._lock:
            if addr not in self._greet and len(self._greet) >= MAX_PENDING_GREETS:
                return
            self._greet[addr] = None
        self.announce_now.set()

    def full_round_wanted(self) -> bool:
        """Whether our models changed since the last full round (the loop then runs one early)."""
        with self._lock:
            return self._full_round

    # -- work for the announce loop and pulls ---------------------------------------------------

    def fetch_ad(self, model_id: str, holders: Iterable[str]) -> VerifiedAd | None:
        """Ask holders for a model's manifest until one verifies; liars are marked bad."""
        for addr in self.peers.order(list(holders)):
            try:
                with connect(addr) as ch:
                    msg = registry_stub(ch).GetManifest(pb.GetManifestRequest(model_id=model_id),
                                                        timeout=CALL_TIMEOUT_S)
                ad = verify_ad(convert.ad_from_pb(msg))
            except grpc.RpcError as exc:
                log.info("manifest of %s not available from %s: %s", model_id, addr, exc.code())
                continue
            except RegistryError as exc:
                log.warning("peer %s served a manifest that does not verify: %s", addr, exc)
                self.peers.mark_bad(addr, f"bad manifest for {model_id}: {exc}")
                continue
            self.peers.seen(addr)
            self._remember(ad, addr)
            return ad
        return None

    def _remember(self, ad: VerifiedAd, holder: str) -> None:
        with self._lock:
            if ad.model_id not in self._ads and len(self._ads) >= MAX_CACHED_ADS:
                return
            self._ads[ad.model_id] = ad
            if holder:
                self._note_holder(self._ad_holders.setdefault(ad.model_id, {}), holder)

    def _note_holder(self, holders: dict[str, tuple[float, float]], addr: str) -> None:
        """Record that `addr` advertised a model (lock held), within MAX_AD_HOLDERS_PER_MODEL."""
        now = time.time()
        if addr in holders:
            holders[addr] = (holders[addr][0], now)
            return
        if len(holders) >= MAX_AD_HOLDERS_PER_MODEL:
            unproven = [a for a in holders if not self.peers.served_at(a)]
            if not unproven:
                return
            del holders[min(unproven, key=lambda a: holders[a][1])]
        holders[addr] = (now, now)

    def record(self) -> NodeRecord:
        return NodeRecord(addr=self.self_ref.grpc_addr, key_id=self.self_ref.key_id, version=self.self_ref.version,
                          capacity=dict(self.capacity), models=tuple(self.view.ids()))

    def announce_once(self) -> None:
        """Publish ourselves in the DHT, gossip with every good peer (and the newcomers waiting
        to be greeted), push them our ads."""
        with self._lock:
            self._full_round = False
            waiting, self._greet = list(self._greet), {}
        record = self.record()
        if self.discovery is not None:
            self.discovery.announce(record, record.models)
        targets = self.peers.round_targets()
        chosen = set(targets)
        targets += [a for a in waiting if a not in chosen and not self.peers.is_banned(a)]
        self._gossip_round(record, targets)

    def greet_newcomers(self) -> None:
        """Gossip with, and push our ads to, only the peers met since the last round."""
        with self._lock:
            targets, self._greet = list(self._greet), {}
        targets = [a for a in targets if not self.peers.is_banned(a)]
        if targets:
            self._gossip_round(self.record(), targets)

    def _gossip_round(self, record: NodeRecord, targets: list[str]) -> None:
        """Gossip with `targets`, GOSSIP_WORKERS at a time: a silent address costs the round one
        GOSSIP_TIMEOUT_S, not one per silent address in a row."""
        ads = [convert.ad_to_pb(ad) for ad in (self.view.ad(i) for i in record.models) if ad is not None]
        me = convert.peer_to_pb(self.self_ref)
        if len(targets) <= 1:
            for addr in targets:
                self._gossip_with(addr, me, ads)
            return
        with ThreadPoolExecutor(max_workers=min(GOSSIP_WORKERS, len(targets)), thread_name_prefix="gossip") as pool:
            for future in [pool.submit(self._gossip_with, addr, me, ads) for addr in targets]:
                future.result()

    def _gossip_with(self, addr: str, me: pb.PeerInfo, ads: list[pb.ModelAd]) -> None:
        known = [convert.peer_to_pb(PeerRef(p.addr, p.key_id, p.version)) for p in self.peers.gossip()]
        with connect(addr) as ch:
            stub = registry_stub(ch)
            try:
                reply = stub.Announce(pb.AnnounceRequest(sender=me, known=known), timeout=GOSSIP_TIMEOUT_S)
            except grpc.RpcError as exc:
                log.info("gossip with %s failed: %s", addr, exc.code())
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.peers.mark_unreachable(addr, f"unreachable: {exc.code().name}")
                return
            self.peers.seen(addr)
            try:  # it answered: a slow or refused ad push is not a reason to stop dialling it
                for batch in _batches(ads):
                    stub.Advertise(pb.AdvertiseRequest(sender=me, models=batch), timeout=GOSSIP_TIMEOUT_S)
            except grpc.RpcError as exc:
                log.info("pushing ads to %s failed: %s", addr, exc.code())
        for peer in reply.known:
            if self._heard(peer.grpc_addr):  # introduce ourselves to the newcomers now, not in a minute
                self._want_greet(peer.grpc_addr)


def say_goodbye(self_ref: PeerRef, peers: PeerTable) -> None:
    """Tell the peers we gossip with that we are leaving, so each stops listing us (once it finds
    that we no longer answer) before our records expire."""
    me = convert.peer_to_pb(self_ref)
    for addr in peers.round_targets():
        try:
            with connect(addr) as ch:
                registry_stub(ch).Announce(pb.AnnounceRequest(sender=me, leaving=True), timeout=GOODBYE_TIMEOUT_S)
        except grpc.RpcError:
            continue


def _batches(ads: list[pb.ModelAd]) -> list[list[pb.ModelAd]]:
    """Group ads so that no Advertise request comes near the message-size limit."""
    batches: list[list[pb.ModelAd]] = [[]]
    size = 0
    for ad in ads:
        n = ad.ByteSize()
        if batches[-1] and size + n > ADVERTISE_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(ad)
        size += n
    return [b for b in batches if b]


def _summary(ad: VerifiedAd, holders: tuple[str, ...]) -> ModelSummary:
    return ModelSummary(model_id=ad.model_id, name=ad.manifest.name, kind=ad.manifest.kind,
                        publisher_key_id=ad.key_id, size=sum(size for _, _, size in ad.ad.files), local=False,
                        holders=holders)
