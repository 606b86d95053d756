"""Transfer servicer: stream a stored blob, addressed only by its sha256, from an offset.

    TransferServicer(blob_path=view.blob_path)   # digest hex → Path | None; default StreamSlots

Requests name a digest, never a path, and the digest must be 64 lowercase hex characters, so
nothing outside the content store can be read. Chunks are CHUNK_SIZE bytes; a puller resumes
by asking again from the size of its partial file. Every stream holds one of the servicer's
`StreamSlots` (registry.services.limits): streams are capped in total and per client, and a
reader that stops reading is cut after the send timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.ids import digest_hex
from registry.services.limits import StreamSlots

log = logging.getLogger(__name__)

# 1 MiB: large enough that per-message overhead is negligible on loopback, small enough that a
# resume wastes little and messages stay far below gRPC's default 4 MiB limit.
CHUNK_SIZE = 1 << 20


class TransferServicer(pb_grpc.TransferServicer):
    """:param blob_path: digest hex → path of the stored blob, None when not held
    :param slots: the bounds every stream is held to (default: the node's StreamSlots())
    """

    def __init__(self, blob_path: Callable[[str], Path | None], slots: StreamSlots | None = None) -> None:
        self._blob_path = blob_path
        self.slots = slots or StreamSlots()

    def Fetch(self, request: pb.FetchRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        digest = digest_hex(request.digest)
        if digest is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "digest must be 64 lowercase hex characters (sha256)")
        path = self._blob_path(digest)
        if path is None or not path.is_file():
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob sha256:{digest} in this node's store")
        size = path.stat().st_size
        offset = int(request.offset)
        if offset > size:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {offset} is past the blob's end ({size} bytes)")
        yield from self.slots.stream(context, _chunks(path, offset, size, context))


def _chunks(path: Path, offset: int, size: int, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
    with path.open("rb") as f:
        f.seek(offset)
        while context.is_active():
            data = f.read(CHUNK_SIZE)
            if not data:
                break
            yield pb.Chunk(offset=offset, data=data, total_size=size)
            offset += len(data)
    if size == 0:
        yield pb.Chunk(offset=0, data=b"", total_size=0)
