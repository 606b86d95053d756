"""The gRPC services a node serves, as `ServiceSpec`s for `node.process.server.NodeServer`.

Each `add` builds its servicer from parts the `Node` made before serving (view, network, plans),
so every servicer knows the node's real address from the start.
"""

from __future__ import annotations

from typing import Any

import grpc

from node.plans.service import PlansServicer
from node.process.server import ServiceSpec
from protos import mergenet_pb2_grpc as pb_grpc
from registry.services.registry_service import RegistryServicer
from registry.services.transfer_service import TransferServicer


def _add_registry(server: grpc.Server, node: Any) -> None:
    pb_grpc.add_RegistryServicer_to_server(RegistryServicer(node.view, node.network), server)


def _add_transfer(server: grpc.Server, node: Any) -> None:
    pb_grpc.add_TransferServicer_to_server(TransferServicer(node.view.blob_path), server)


def _add_plans(server: grpc.Server, node: Any) -> None:
    pb_grpc.add_PlansServicer_to_server(PlansServicer(node.plans, node.network.peers), server)


REGISTRY_SERVICE = ServiceSpec("mergenet.v1.Registry", _add_registry)
TRANSFER_SERVICE = ServiceSpec("mergenet.v1.Transfer", _add_transfer)
PLANS_SERVICE = ServiceSpec("mergenet.v1.Plans", _add_plans)
DEFAULT_SERVICES: tuple[ServiceSpec, ...] = (REGISTRY_SERVICE, TRANSFER_SERVICE, PLANS_SERVICE)
