"""A container health probe: ask a node's standard gRPC health service whether it is serving.

    python -m node.process.healthcheck [HOST:PORT]    # exit 0: SERVING; 1: anything else

The address defaults to `$MERGENET_NODE`, else 127.0.0.1:7470. It ships with the package so an
image needs no downloaded probe binary (docker/compose.yaml uses it as the health check).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROBE_TIMEOUT_S = 3.0
DEFAULT_ADDR = "127.0.0.1:7470"


def probe(addr: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The overall health status name (e.g. "SERVING"), or why there is none."""
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout_s)
        except grpc.RpcError as exc:
            return f"unreachable ({exc.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    addr = args[0] if args else os.environ.get("MERGENET_NODE", DEFAULT_ADDR)
    status = probe(addr)
    if status == "SERVING":
        return 0
    sys.stderr.write(f"mergenet node {addr}: {status}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
