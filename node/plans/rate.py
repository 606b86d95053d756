"""Token buckets per sender: how many plan statements one peer address or one key may make a
node handle per second, so a flood from a stranger costs it little.

    limits = RateLimiter()
    if not limits.allow("peer:127.0.0.1:7471"): drop the statement

Buckets are kept for at most MAX_BUCKETS senders (the least recently seen are forgotten, which
only ever gives a forgotten sender a full bucket again).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

# A plan takes a handful of statements per node (plan, consents, bids, commit, heartbeats,
# result, attestations): a sustained 50 per second per sender is far above honest traffic.
RATE_PER_S = 50.0
BURST = 200.0
MAX_BUCKETS = 4096


class RateLimiter:
    def __init__(self, rate_per_s: float = RATE_PER_S, burst: float = BURST, max_buckets: int = MAX_BUCKETS) -> None:
        self.rate, self.burst, self.max_buckets = rate_per_s, burst, max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            ok = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
            return ok
