"""The known-peer table: gRPC addresses learned from flags, gossip and the DHT, plus a memory of
peers that misbehaved (dead, lying, tampering) so pulls try them last and gossip skips them.

    table = PeerTable(self_addr="127.0.0.1:7470")
    table.add("127.0.0.1:7471", key_id="ab…", source="gossip")
    table.mark_bad("127.0.0.1:7471", "served bytes that do not match the manifest")
    table.good()   # addresses worth talking to, best first

Thread-safe: gRPC handlers, the announce loop and pulls share one table.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

# A peer that failed is avoided this long before it gets another chance.
BAD_PEER_MEMORY_S = 600.0
# Gossip carries at most this many peers, and the table holds at most this many.
MAX_GOSSIP_PEERS = 64
MAX_PEERS = 1024


@dataclass(frozen=True)
class Peer:
    addr: str
    key_id: str = ""
    version: str = ""
    source: str = "flag"
    last_seen: float = 0.0
    bad_until: float = 0.0
    bad_reason: str = ""


class PeerTable:
    def __init__(self, self_addr: str = "") -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self.self_addr = self_addr

    def add(self, addr: str, key_id: str = "", version: str = "", source: str = "gossip") -> bool:
        """Record a peer (or refresh it); False for our own address, junk or a full table."""
        if not addr or addr == self.self_addr or len(addr) > 300 or ":" not in addr:
            return False
        with self._lock:
            old = self._peers.get(addr)
            if old is None and len(self._peers) >= MAX_PEERS:
                return False
            base = old or Peer(addr=addr, source=source)
            self._peers[addr] = replace(base, key_id=key_id or base.key_id, version=version or base.version,
                                        last_seen=time.time())
            return old is None

    def remove(self, addr: str) -> None:
        with self._lock:
            self._peers.pop(addr, None)

    def mark_bad(self, addr: str, reason: str) -> None:
        with self._lock:
            base = self._peers.get(addr) or Peer(addr=addr, source="pull")
            self._peers[addr] = replace(base, bad_until=time.time() + BAD_PEER_MEMORY_S, bad_reason=reason)

    def is_bad(self, addr: str) -> bool:
        with self._lock:
            peer = self._peers.get(addr)
            return peer is not None and peer.bad_until > time.time()

    def good(self) -> list[str]:
        """Addresses not currently marked bad, most recently seen first."""
        now = time.time()
        with self._lock:
            peers = [p for p in self._peers.values() if p.bad_until <= now]
        return [p.addr for p in sorted(peers, key=lambda p: -p.last_seen)]

    def gossip(self) -> list[Peer]:
        now = time.time()
        with self._lock:
            peers = [p for p in self._peers.values() if p.bad_until <= now]
        return sorted(peers, key=lambda p: -p.last_seen)[:MAX_GOSSIP_PEERS]

    def all(self) -> list[Peer]:
        with self._lock:
            return list(self._peers.values())

    def order(self, addrs: list[str]) -> list[str]:
        """The given addresses, deduplicated, good peers first (bad ones kept as a last resort)."""
        unique = list(dict.fromkeys(addrs))
        return [a for a in unique if not self.is_bad(a)] + [a for a in unique if self.is_bad(a)]
