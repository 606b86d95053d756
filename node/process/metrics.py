"""The node's Prometheus metrics: event counters any module bumps in one line, the node's own
state read at scrape time, and the opt-in HTTP endpoint that serves both.

    from node.process import metrics
    metrics.record_fetched(len(chunk.data))        # one line where the event happens
    metrics.record_refused(metrics.BAD_STATEMENT)
    @metrics.counted("merge")                      # runs and failures of a job
    server = metrics.MetricsServer.start(node, "127.0.0.1:9470"); ...; server.stop()

Event metrics live in `EVENTS`, a registry of this process (prometheus_client's default one
is left alone, so a library importing this module adds nothing to anyone else's endpoint).
Gauges that describe the node (models held, peers, plans by state, transfers in progress) are
computed from the node's own objects on each scrape: nothing has to keep them in step.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from node.errors import NodeError
from node.process.web import WebEndpoint

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

EVENTS = CollectorRegistry(auto_describe=True)

BYTES_SERVED = Counter("mergenet_bytes_served", "Blob bytes this node streamed to peers", registry=EVENTS)
BYTES_FETCHED = Counter("mergenet_bytes_fetched", "Blob bytes this node received from peers", registry=EVENTS)
JOBS = Counter("mergenet_jobs", "Jobs run by this node, by job (pull, merge, verify) and outcome (ok, failed)",
               ["job", "outcome"], registry=EVENTS)
REFUSED = Counter("mergenet_refused", "Requests and statements refused as hostile, by reason", ["reason"],
                  registry=EVENTS)
RPC_SECONDS = Histogram("mergenet_rpc_seconds", "gRPC request latency (streams: until the last message)",
                        ["method", "code"], registry=EVENTS,
                        buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0))

# Reasons for `record_refused`: the label values operators alert on.
BAD_STATEMENT = "bad_statement"  # a plan statement whose signature or signer does not check out
BAD_AD = "bad_ad"                # a model advertisement whose signature or manifest does not check out
RATE_LIMITED = "rate_limited"    # a request answered RESOURCE_EXHAUSTED

SERVED, FETCHED = "served", "fetched"


def record_fetched(n_bytes: int) -> None:
    BYTES_FETCHED.inc(n_bytes)


def record_served(n_bytes: int) -> None:
    BYTES_SERVED.inc(n_bytes)


def record_refused(reason: str, count: int = 1) -> None:
    REFUSED.labels(reason).inc(count)


def record_rpc(method: str, code: str, seconds: float) -> None:
    RPC_SECONDS.labels(method, code).observe(seconds)


def counted(job: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a job's entry point: each call counts as one run, an exception as a failure."""
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                out = fn(*args, **kwargs)
            except BaseException:
                JOBS.labels(job, "failed").inc()
                raise
            JOBS.labels(job, "ok").inc()
            return out
        return run
    return wrap


@dataclass(frozen=True)
class Transfer:
    """One transfer in progress: `what` is a blob digest (served) or a model id (a pull)."""

    direction: str
    what: str
    peer: str
    started: float
    done_bytes: int = 0
    total_bytes: int = 0


class ActiveTransfers:
    """The transfers running now, for the status page and the in-progress gauge."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._items: dict[int, Transfer] = {}

    def begin(self, direction: str, what: str, peer: str = "", total_bytes: int = 0) -> int:
        with self._lock:
            key = next(self._ids)
            self._items[key] = Transfer(direction, what, peer, time.time(), 0, total_bytes)
            return key

    def advance(self, key: int, n_bytes: int, total_bytes: int = 0) -> None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items[key] = replace(item, done_bytes=item.done_bytes + n_bytes,
                                           total_bytes=total_bytes or item.total_bytes)

    def end(self, key: int) -> None:
        with self._lock:
            self._items.pop(key, None)

    def snapshot(self) -> list[Transfer]:
        with self._lock:
            return sorted(self._items.values(), key=lambda t: t.started)


TRANSFERS = ActiveTransfers()


def pulling(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate `pull(model_id, ...)`: counted as job "pull" and listed as a transfer while it runs."""
    counted_fn = counted("pull")(fn)

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        key = TRANSFERS.begin(FETCHED, str(args[0] if args else kwargs.get("model_id", "")))
        try:
            return counted_fn(*args, **kwargs)
        finally:
            TRANSFERS.end(key)
    return run


class NodeStateCollector:
    """Gauges read from a running node on each scrape: models held, peers, plans, transfers."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        from node.plans.state import STATES

        node = self.node
        yield GaugeMetricFamily("mergenet_models_held", "Models in this node's registry", value=len(node.view.ids()))
        yield GaugeMetricFamily("mergenet_peers", "Peers this node can reach (not marked bad)",
                                value=len(node.network.peers.good()))
        plans = GaugeMetricFamily("mergenet_plans", "Plans this node follows, by state", labels=["state"])
        states = [r.state for r in node.plans.engine.store.list()]
        for state in STATES:
            plans.add_metric([state], states.count(state))
        yield plans
        active = GaugeMetricFamily("mergenet_transfers_in_progress", "Transfers running now, by direction",
                                   labels=["direction"])
        running = TRANSFERS.snapshot()
        for direction in (SERVED, FETCHED):
            active.add_metric([direction], sum(t.direction == direction for t in running))
        yield active


class MetricsServer(WebEndpoint):
    """The /metrics endpoint of one node (prometheus_client's own HTTP server, on its own thread)."""

    name = "metrics"  # its key in node.json

    @classmethod
    def start(cls, node: Any, listen: str) -> MetricsServer:
        """Serve `node`'s metrics on `listen` (HOST:PORT; port 0 picks one); NodeError if it cannot bind."""
        from node.process.config import parse_hostport

        host, port = parse_hostport(listen, "--metrics-port")
        registry = CollectorRegistry()
        registry.register(EVENTS)
        registry.register(NodeStateCollector(node))
        ProcessCollector(registry=registry)
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise NodeError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
        addr = f"{host}:{server.server_port}"
        log.info("metrics on http://%s/metrics", addr)
        return cls(server, thread, addr)
