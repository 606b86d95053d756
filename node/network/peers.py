"""The known-peer table: gRPC addresses learned from flags, gossip and the DHT, plus a memory of
peers that misbehaved (dead, lying, tampering) so pulls try them last and gossip skips them.

    table = PeerTable(self_addr="127.0.0.1:7470")
    table.add("127.0.0.1:7471", key_id="ab…", source="announce")   # a peer speaking for itself
    table.heard("127.0.0.1:7472")                                    # a third party naming a peer
    table.seen("127.0.0.1:7471")       # it answered a call we made: first-hand contact
    table.served("127.0.0.1:7471")     # it streamed bytes that verified
    table.mark_bad("127.0.0.1:7471", "served bytes that do not match the manifest")
    table.mark_unreachable("127.0.0.1:7472", "DEADLINE_EXCEEDED")   # backs off, doubling
    table.good()   # addresses worth talking to, best first

What anyone says about a peer is hearsay; only a call the peer answered (`seen`) or bytes it
served that verified (`served`) count as contact. The table is bounded (MAX_PEERS): when full, a
newcomer replaces the least recently seen peer, never-contacted ones first (oldest hearsay
first), so a flood of gossiped addresses only replaces other hearsay, never a peer that answers.
Peers given by the operator (`source="flag"`) are never evicted. Key ids are labels for
display; nothing is authorized by them (signed statements carry their own keys).

Thread-safe: gRPC handlers, the announce loop and pulls share one table.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

# A peer that lied or tampered is avoided this long before it gets another chance.
BAD_PEER_MEMORY_S = 600.0
# One that did not answer is avoided this long, doubling with each failure in a row up to
# BAD_PEER_MEMORY_S: one timeout on a busy machine must not cut an honest peer off for ten minutes.
UNREACHABLE_BACKOFF_S = 15.0
# Gossip carries at most this many peers, and the table holds at most this many.
MAX_GOSSIP_PEERS = 64
MAX_PEERS = 1024
# Peers never contacted that one announce round tries to reach (most recently heard first):
# a flood of hearsay cannot make a round dial a thousand addresses.
MAX_UNSEEN_PER_ROUND = 16
MAX_ADDR_CHARS = 300
FLAG = "flag"


@dataclass(frozen=True)
class Peer:
    """:param last_seen: when it last answered us or served us verified bytes (0: never)
    :param heard: when anyone last named it (itself included)
    :param served_at: when it last streamed us bytes that verified (0: never)
    """

    addr: str
    key_id: str = ""
    version: str = ""
    source: str = "gossip"
    last_seen: float = 0.0
    heard: float = 0.0
    served_at: float = 0.0
    bad_until: float = 0.0
    bad_reason: str = ""
    retry_at: float = 0.0  # it did not answer: not dialled again before this
    failures: int = 0  # calls in a row it did not answer

    def avoided(self, now: float) -> bool:
        """Not to be dialled now (it misbehaved, or its back-off after failing to answer runs)."""
        return self.bad_until > now or self.retry_at > now

    def usable(self, now: float) -> bool:
        """Good: not avoided and not failing (one that stopped answering is good again only once
        it answers; until then announce rounds retry it when its back-off is over)."""
        return not self.avoided(now) and self.failures == 0


def _recency(peer: Peer) -> tuple[float, float]:
    return peer.last_seen, peer.heard


class PeerTable:
    def __init__(self, self_addr: str = "") -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self.self_addr = self_addr

    def add(self, addr: str, key_id: str = "", version: str = "", source: str = "gossip") -> bool:
        """A peer (or its signed DHT record, or the operator) names itself; True when it is new.
        False for our own address, junk, or a table full of peers that may not be evicted."""
        return self._note(addr, source, key_id=key_id, version=version)

    def heard(self, addr: str, source: str = "gossip") -> bool:
        """A third party names a peer: only its address is taken (never its key or version)."""
        return self._note(addr, source)

    def _note(self, addr: str, source: str, **about: str) -> bool:
        if not addr or addr == self.self_addr or len(addr) > MAX_ADDR_CHARS or ":" not in addr:
            return False
        with self._lock:
            old = self._peers.get(addr)
            if old is None and not self._make_room():
                return False
            base = old or Peer(addr=addr, source=source)
            changes = {k: v for k, v in about.items() if v}
            self._peers[addr] = replace(base, heard=time.time(), **changes)
            return old is None

    def _make_room(self) -> bool:
        """Evict the least recently seen peer when full (lock held); False when nothing may go."""
        if len(self._peers) < MAX_PEERS:
            return True
        evictable = [p for p in self._peers.values() if p.source != FLAG]
        if not evictable:
            return False
        del self._peers[min(evictable, key=_recency).addr]
        return True

    def seen(self, addr: str) -> None:
        """First-hand contact: the peer answered a call we made to its address."""
        self._touch(addr, "last_seen")

    def served(self, addr: str) -> None:
        """The peer streamed us bytes that verified: a real holder, and alive."""
        self._touch(addr, "last_seen", "served_at")

    def _touch(self, addr: str, *fields: str) -> None:
        now = time.time()
        with self._lock:
            old = self._peers.get(addr)
            if old is None and (addr == self.self_addr or not self._make_room()):
                return
            base = old or Peer(addr=addr, source="contact", heard=now)
            self._peers[addr] = replace(base, failures=0, retry_at=0.0, **dict.fromkeys(fields, now))

    def contacted(self, addr: str) -> bool:
        """Whether the peer ever answered a call of ours."""
        with self._lock:
            peer = self._peers.get(addr)
            return peer is not None and peer.last_seen > 0

    def served_at(self, addr: str) -> float:
        """When the peer last streamed us bytes that verified; 0 when it never did."""
        with self._lock:
            peer = self._peers.get(addr)
            return peer.served_at if peer is not None else 0.0

    def remove(self, addr: str) -> None:
        with self._lock:
            self._peers.pop(addr, None)

    def mark_bad(self, addr: str, reason: str) -> None:
        """The peer misbehaved (lied, tampered, flooded): avoid it for BAD_PEER_MEMORY_S."""
        with self._lock:
            base = self._entry(addr)
            if base is not None:
                self._peers[addr] = replace(base, bad_until=time.time() + BAD_PEER_MEMORY_S, bad_reason=reason)

    def mark_unreachable(self, addr: str, reason: str) -> None:
        """The peer did not answer (down, stalled, timed out): avoid it for a while that doubles
        with each failure in a row, until it answers a call again (`seen`)."""
        with self._lock:
            base = self._entry(addr)
            if base is not None:
                wait = min(BAD_PEER_MEMORY_S, UNREACHABLE_BACKOFF_S * 2 ** base.failures)
                self._peers[addr] = replace(base, retry_at=time.time() + wait, failures=base.failures + 1,
                                            bad_reason=base.bad_reason if base.bad_until > time.time() else reason)

    def _entry(self, addr: str) -> Peer | None:
        """The peer's row, made (as learned from a pull) when missing and there is room (lock held)."""
        base = self._peers.get(addr)
        if base is None and addr != self.self_addr and self._make_room():
            base = Peer(addr=addr, source="pull")
        return base

    def is_bad(self, addr: str) -> bool:
        with self._lock:
            peer = self._peers.get(addr)
            return peer is not None and peer.avoided(time.time())

    def _good(self) -> list[Peer]:
        now = time.time()
        with self._lock:
            peers = [p for p in self._peers.values() if p.usable(now)]
        return sorted(peers, key=_recency, reverse=True)

    def good(self) -> list[str]:
        """Addresses not marked bad and not failing to answer, most recently seen first (then most
        recently heard)."""
        return [p.addr for p in self._good()]

    def gossip(self) -> list[Peer]:
        """What we tell others: peers we contacted first, hearsay only in the remaining places."""
        return self._good()[:MAX_GOSSIP_PEERS]

    def round_targets(self) -> list[str]:
        """Whom one announce round dials: every good peer we contacted or were told of by the
        operator, those of them that stopped answering once their back-off is over (one more
        try), plus at most MAX_UNSEEN_PER_ROUND never-contacted others (hearsay that never failed
        first, most recently heard first): a flood of gossiped addresses that fail stays capped."""
        now = time.time()
        with self._lock:
            due = sorted((p for p in self._peers.values() if not p.avoided(now)), key=_recency, reverse=True)
        vouched = [p for p in due if p.last_seen or p.source == FLAG]
        known = [p.addr for p in vouched if not p.failures] + [p.addr for p in vouched if p.failures]
        hearsay = [p for p in due if not (p.last_seen or p.source == FLAG)]
        unseen = [p.addr for p in hearsay if not p.failures] + [p.addr for p in hearsay if p.failures]
        return known + unseen[:MAX_UNSEEN_PER_ROUND]

    def is_banned(self, addr: str) -> bool:
        """Avoided for misbehaving (not merely for failing to answer)."""
        with self._lock:
            peer = self._peers.get(addr)
            return peer is not None and peer.bad_until > time.time()

    def failing(self, addr: str) -> bool:
        """It failed to answer our last call(s) and has not answered since."""
        with self._lock:
            peer = self._peers.get(addr)
            return peer is not None and peer.failures > 0

    def all(self) -> list[Peer]:
        with self._lock:
            return list(self._peers.values())

    def order(self, addrs: list[str]) -> list[str]:
        """The given addresses, deduplicated, good peers first (bad ones kept as a last resort)."""
        unique = list(dict.fromkeys(addrs))
        return [a for a in unique if not self.is_bad(a)] + [a for a in unique if self.is_bad(a)]
