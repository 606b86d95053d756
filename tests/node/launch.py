"""Test-only node launcher: `python -m tests.node.launch node start ...` is `mergenet node start`
with a Transfer servicer that misbehaves as the test asks, so the product's own configuration
holds no such switches.

    MERGENET_TEST_THROTTLE_S=0.2   sleep that long after each served chunk (interruptible pulls)
    MERGENET_TEST_TAMPER=1         flip the first byte of every served chunk (a lying holder)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import grpc

from node.process import services
from node.process.server import ServiceSpec
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.services.transfer_service import TransferServicer

THROTTLE_ENV = "MERGENET_TEST_THROTTLE_S"
TAMPER_ENV = "MERGENET_TEST_TAMPER"


class MisbehavingTransfer(TransferServicer):
    def __init__(self, blob_path, throttle_s: float, tamper: bool) -> None:
        super().__init__(blob_path)
        self.throttle_s, self.tamper = throttle_s, tamper

    def Fetch(self, request: pb.FetchRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        for chunk in super().Fetch(request, context):
            if self.tamper and chunk.data:
                chunk = pb.Chunk(offset=chunk.offset, data=bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:],
                                 total_size=chunk.total_size)
            yield chunk
            if self.throttle_s:
                time.sleep(self.throttle_s)


def transfer_spec(throttle_s: float, tamper: bool) -> ServiceSpec:
    def add(server: grpc.Server, node) -> None:
        pb_grpc.add_TransferServicer_to_server(MisbehavingTransfer(node.view.blob_path, throttle_s, tamper), server)

    return ServiceSpec(services.TRANSFER_SERVICE.name, add)


def main() -> int:
    from node.cli.main import main as cli_main

    throttle_s, tamper = float(os.environ.get(THROTTLE_ENV, "0")), os.environ.get(TAMPER_ENV) == "1"
    if throttle_s or tamper:
        spec = transfer_spec(throttle_s, tamper)
        services.DEFAULT_SERVICES = tuple(spec if s.name == spec.name else s for s in services.DEFAULT_SERVICES)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
