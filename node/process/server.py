"""The node's gRPC server: mergenet services plus the standard health and reflection services.

    server, port = start_server("127.0.0.1:0", specs, node)   # port 0 → the real port

A service is a `ServiceSpec(name, add)`: `add(server, node)` registers its servicer. The node's
own services are in `node.process.services.DEFAULT_SERVICES`; more (the Plans service) are appended
there or passed with `Node.add_service(spec)` before `start()`.
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

# Worker threads: each streaming Fetch holds one for the transfer's duration.
MAX_WORKERS = 16


@dataclass(frozen=True)
class ServiceSpec:
    """:param name: full service name for reflection and health (e.g. "mergenet.v1.Registry")
    :param add: registers the servicer: add(server, node)
    """

    name: str
    add: Callable[[grpc.Server, Any], None]


def start_server(listen: str, specs: Sequence[ServiceSpec],
                 node: Any) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Build, bind and start the server; NodeError when the address cannot be bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"),
        options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0)],
    )
    for spec in specs:
        spec.add(server, node)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [spec.name for spec in specs]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise NodeError(f"cannot listen on {listen}: {exc}") from None
    if port == 0:
        raise NodeError(f"cannot listen on {listen}: the address is in use or not local")
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port
