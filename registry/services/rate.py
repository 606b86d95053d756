"""Per-client rate limits for gossip: one token bucket per client host, in a bounded table.

    limiter = RateLimiter()                 # GOSSIP_RATE_PER_S, GOSSIP_BURST
    if not limiter.allow(client_host(context.peer())): ...   # refuse: RESOURCE_EXHAUSTED

Keyed by the connection's host (what gRPC saw), never by the sender a request claims to be:
a claim costs nothing, a host does. Nodes sharing a host (one machine, one NAT) share a bucket,
so the burst is sized for a few dozen honest nodes behind one address.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

# An honest node sends each peer one Announce and a few Advertise batches per announce round
# (node.network.dht_records.ANNOUNCE_PERIOD_S, 60 s), plus a round whenever it meets a newcomer.
GOSSIP_RATE_PER_S = 5.0
GOSSIP_BURST = 100.0
# Buckets kept at once; the least recently used is dropped first (a dropped host starts full,
# which is no better than its bucket refilling while it sent nothing).
MAX_BUCKETS = 4096


class RateLimiter:
    """:param rate_per_s: tokens a client earns per second
    :param burst: most tokens a client can save up (and its allowance when first seen)
    :param max_buckets: clients tracked at once
    """

    def __init__(self, rate_per_s: float = GOSSIP_RATE_PER_S, burst: float = GOSSIP_BURST,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_buckets = max_buckets
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, when)

    def allow(self, client: str, cost: float = 1.0) -> bool:
        """Spend `cost` tokens of `client`'s bucket; False (nothing spent) when it has too few."""
        now = time.monotonic()
        with self._lock:
            tokens, when = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate_per_s)
            allowed = tokens >= cost
            self._buckets[client] = (tokens - cost if allowed else tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
            return allowed
