"""The gRPC services a node serves, as `ServiceSpec`s for `node.process.server.start_server`.

The plans engineer adds the Plans service by appending one `ServiceSpec` to DEFAULT_SERVICES
(or by calling `Node.add_service(spec)` before `Node.start()`).
"""

from __future__ import annotations

from typing import Any

import grpc

from node.plans.service import PLANS_SERVICE
from node.process.server import ServiceSpec
from protos import mergenet_pb2_grpc as pb_grpc
from registry.services.registry_service import RegistryServicer
from registry.services.transfer_service import TransferServicer


def _add_registry(server: grpc.Server, node: Any) -> None:
    pb_grpc.add_RegistryServicer_to_server(RegistryServicer(node.view, node.network), server)


def _add_transfer(server: grpc.Server, node: Any) -> None:
    cfg = node.config
    servicer = TransferServicer(node.view.blob_path, throttle_s=cfg.transfer_throttle_s, tamper=cfg.transfer_tamper)
    pb_grpc.add_TransferServicer_to_server(servicer, server)


DEFAULT_SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("mergenet.v1.Registry", _add_registry),
    ServiceSpec("mergenet.v1.Transfer", _add_transfer),
    PLANS_SERVICE,
)
