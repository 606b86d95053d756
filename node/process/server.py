"""The node's gRPC server: mergenet services plus the standard health and reflection services.

    server = NodeServer.bind("127.0.0.1:0")     # the port is bound first: its address is known
    server.add(specs, node)                     # then the services are built with that address
    server.start(); ...; server.stop(grace_s)

A service is a `ServiceSpec(name, add)`: `add(server, node)` registers its servicer. The node's
services are `node.process.services.DEFAULT_SERVICES`; a test launcher may pass others.
One thread pool serves every service; Transfer streams may hold only MAX_FETCH_STREAMS of its
threads (registry.services.limits), so RESERVED_WORKERS always remain for everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node.errors import NodeError
from node.network.client import MAX_MESSAGE_BYTES
from node.process.rpc_metrics import MetricsInterceptor
from registry.services.limits import MAX_FETCH_STREAMS

# Worker threads: each Transfer stream holds one for its duration, and Transfer may hold at most
# MAX_FETCH_STREAMS of them (registry.services.limits.StreamSlots), so this many always remain
# for health, registry and plan calls, whatever readers of Transfer streams do.
RESERVED_WORKERS = 16
MAX_WORKERS = MAX_FETCH_STREAMS + RESERVED_WORKERS
# Calls running or queued for a thread; past it gRPC answers RESOURCE_EXHAUSTED at once rather
# than queueing without bound.
MAX_CONCURRENT_RPCS = 8 * MAX_WORKERS
# A connection with no call for this long is closed (a client that opens connections and sits
# on them costs a socket each); keepalive pings find peers that vanished without closing.
MAX_CONNECTION_IDLE_MS = 5 * 60 * 1000
KEEPALIVE_TIME_MS = 60 * 1000
KEEPALIVE_TIMEOUT_MS = 20 * 1000


@dataclass(frozen=True)
class ServiceSpec:
    """:param name: full service name for reflection and health (e.g. "mergenet.v1.Registry")
    :param add: registers the servicer: add(server, node)
    """

    name: str
    add: Callable[[grpc.Server, Any], None]


class NodeServer:
    """A bound, not yet started gRPC server; `start` serves, `stop` ends it."""

    def __init__(self, server: grpc.Server, port: int) -> None:
        self.grpc = server
        self.port = port
        self.health = health.HealthServicer()
        self._names: list[str] = []

    @classmethod
    def bind(cls, listen: str, interceptors: Sequence[grpc.ServerInterceptor] = ()) -> NodeServer:
        """NodeError when the address cannot be bound (in use, or not an address of this machine);
        `interceptors` see every call first (the node's `node.process.auth.OperatorGate`)."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"),
            interceptors=[MetricsInterceptor(), *interceptors],
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0),
                     ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
                     ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                     ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS)],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        try:
            port = server.add_insecure_port(listen)
        except RuntimeError as exc:
            raise NodeError(f"cannot listen on {listen}: {exc}") from None
        if port == 0:
            raise NodeError(f"cannot listen on {listen}: the address is in use or not local")
        return cls(server, port)

    def add(self, specs: Sequence[ServiceSpec], node: Any) -> None:
        for spec in specs:
            spec.add(self.grpc, node)
            self._names.append(spec.name)

    def start(self) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection([*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.grpc)
        self.grpc.start()
        for name in ["", *self._names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_s: float) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace_s).wait()
