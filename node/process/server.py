"""The node's gRPC server: mergenet services plus the standard health and reflection services.

    server = NodeServer.bind("127.0.0.1:0")     # the port is bound first: its address is known
    server.add(specs, node)                     # then the services are built with that address
    server.start(); ...; server.stop(grace_s)

A service is a `ServiceSpec(name, add)`: `add(server, node)` registers its servicer. The node's
services are `node.process.services.DEFAULT_SERVICES`; a test launcher may pass others.
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

# Worker threads: each streaming Fetch holds one for the transfer's duration.
MAX_WORKERS = 16


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
    def bind(cls, listen: str) -> NodeServer:
        """NodeError when the address cannot be bound (in use, or not an address of this machine)."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"),
            interceptors=[MetricsInterceptor()],
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)],
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
