"""Bounds on Transfer streams, so that readers who stop reading cannot hold the server's threads.

    slots = StreamSlots()                                   # the node's defaults
    yield from slots.stream(context, chunks)                # inside a server-streaming handler

A streaming handler holds one gRPC worker thread for as long as it streams, and a send blocks
while the reader does not read. So every stream takes a slot first: at most `total` streams at
once, at most `per_client` from one client host; past either cap the call ends at once with
RESOURCE_EXHAUSTED (the puller tries another holder or later). While a slot is held, every
message must be taken by the reader within `send_timeout_s`, or the stream is cancelled and its
thread and slot come back. The server's worker pool is larger than `total` (see
`node.process.server`), so health, registry and plan calls always find a thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

import grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# Transfer streams served at once. A puller runs node.transfer.fetch.PARALLEL_BLOBS (4) streams,
# so this serves four full-speed pullers together.
MAX_FETCH_STREAMS = 16
# Streams one client host may hold at once: one puller's parallel streams.
MAX_FETCH_STREAMS_PER_CLIENT = 4
# A reader must take each chunk (1 MiB) within this long, i.e. read at ≥ ~35 KB/s; the puller's
# own stall timeout (node.transfer.fetch.STALL_TIMEOUT_S) is the same.
SEND_TIMEOUT_S = 30.0


def client_host(peer: str) -> str:
    """The host part of a gRPC peer string: "ipv4:127.0.0.1:5000" → "127.0.0.1",
    "ipv6:[::1]:5000" → "::1"; anything else (unix sockets) is returned whole."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


class StreamSlots:
    """:param total: streams at once, all clients together
    :param per_client: streams at once from one client host
    :param send_timeout_s: longest wait for the reader to take one message
    """

    def __init__(self, total: int = MAX_FETCH_STREAMS, per_client: int = MAX_FETCH_STREAMS_PER_CLIENT,
                 send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.total = total
        self.per_client = per_client
        self.send_timeout_s = send_timeout_s
        self._cond = threading.Condition()
        self._held: dict[int, str] = {}  # stream → client host
        self._sending: dict[int, tuple[float, grpc.ServicerContext]] = {}  # stream → (deadline, context)
        self._watchdog: threading.Thread | None = None
        self._keys = itertools.count()

    def in_use(self) -> int:
        with self._cond:
            return len(self._held)

    def stream(self, context: grpc.ServicerContext, items: Iterator[T]) -> Iterator[T]:
        """Yield `items` while holding a slot; RESOURCE_EXHAUSTED when none is free."""
        client = client_host(context.peer())
        key = next(self._keys)
        refusal = self._take(client, key)
        if refusal:
            log.info("refused a transfer stream from %s: %s", client, refusal)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        # gRPC's end-of-call callback frees the slot even when the generator is never resumed.
        context.add_callback(lambda: self._release(key))
        try:
            for item in items:
                self._arm(key, context)
                yield item  # resumes once gRPC has handed this message to the reader
                self._disarm(key)
        finally:
            self._release(key)

    def _take(self, client: str, key: int) -> str:
        """'' when a slot was taken under `key`, else why not."""
        with self._cond:
            if len(self._held) >= self.total:
                return f"this node serves {self.total} transfer streams at once; try again later"
            if sum(1 for c in self._held.values() if c == client) >= self.per_client:
                return f"at most {self.per_client} transfer streams at once per client"
            self._held[key] = client
            return ""

    def _release(self, key: int) -> None:
        """Idempotent: the generator's end and the call's end both release."""
        with self._cond:
            self._held.pop(key, None)
            self._sending.pop(key, None)

    def _arm(self, key: int, context: grpc.ServicerContext) -> None:
        with self._cond:
            self._sending[key] = (time.monotonic() + self.send_timeout_s, context)
            if self._watchdog is None:  # one watcher while any stream sends; it ends when none does
                self._watchdog = threading.Thread(target=self._watch, name="stream-watchdog", daemon=True)
                self._watchdog.start()

    def _disarm(self, key: int) -> None:
        with self._cond:
            self._sending.pop(key, None)

    def _watch(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                late = [(key, ctx) for key, (deadline, ctx) in self._sending.items() if deadline <= now]
                for key, _ in late:
                    del self._sending[key]
                if not late:
                    if not self._sending:
                        self._watchdog = None
                        return
                    self._cond.wait(min(d for d, _ in self._sending.values()) - now)
                    continue
            for _, ctx in late:  # outside the lock: cancelling runs gRPC's end-of-call callbacks
                log.info("cancelling a transfer stream to %s: its reader took no data for %.0f s",
                         ctx.peer(), self.send_timeout_s)
                ctx.cancel()  # the blocked send returns, the handler ends, the slot comes back
