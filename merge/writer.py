"""Streaming sharded safetensors output: tensors are written as they are computed.

    writer = ShardedWriter(tmp_dir, [(name, shape, torch.bfloat16), ...], shard_size=2 * 10**9)
    writer.write(name, tensor)   # in the declared order
    writer.finish()              # checks completeness, writes the index

Last step of the pipeline. Every output shape and dtype is known from the plan before the first
tensor is computed, so each shard's header (offsets included) is written up front and tensor
bytes are appended in order: nothing is buffered beyond the tensor in hand. Shards follow the
Hugging Face naming (`model.safetensors`, or `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json`). Atomic placement of the folder is the executor's job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from merge.errors import MergeError
from merge.io import DTYPE_CODES, INDEX_FILE

DEFAULT_SHARD_SIZE = 5 * 10**9  # bytes; mergekit's and transformers' default


@dataclass(frozen=True)
class _Entry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _header(entries: list[_Entry]) -> bytes:
    meta: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in entries:
        meta[e.name] = {"dtype": DTYPE_CODES[e.dtype], "shape": list(e.shape),
                        "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep tensor data 8-byte aligned, as safetensors does
    return len(raw).to_bytes(8, "little") + raw


@dataclass(frozen=True)
class ShardLayout:
    """Which declared tensor goes into which shard file, and each shard's exact header: computed
    from the layout alone, so a verifier can tell what the writer would produce without tensors."""

    shards: tuple[tuple[_Entry, ...], ...]
    files: tuple[str, ...]

    @classmethod
    def of(cls, layout: list[tuple[str, tuple[int, ...], torch.dtype]],
           shard_size: int = DEFAULT_SHARD_SIZE) -> ShardLayout:
        shards: list[list[_Entry]] = [[]]
        size = 0
        for name, shape, dtype in layout:
            e = _Entry(name, tuple(shape), dtype, _nbytes(tuple(shape), dtype))
            if shards[-1] and size + e.nbytes > shard_size:
                shards.append([])
                size = 0
            shards[-1].append(e)
            size += e.nbytes
        n = len(shards)
        files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        return cls(tuple(tuple(s) for s in shards), tuple(files))

    def header(self, shard: int) -> bytes:
        return _header(list(self.shards[shard]))

    def file_size(self, shard: int) -> int:
        return len(self.header(shard)) + sum(e.nbytes for e in self.shards[shard])

    def index_json(self) -> bytes | None:
        """The `model.safetensors.index.json` bytes of a multi-shard layout (None for one shard)."""
        if len(self.files) == 1:
            return None
        entries = [(i, e) for i, shard in enumerate(self.shards) for e in shard]
        index = {"metadata": {"total_size": sum(e.nbytes for _, e in entries)},
                 "weight_map": {e.name: self.files[i] for i, e in entries}}
        return (json.dumps(index, indent=2) + "\n").encode()


class ShardedWriter:
    """Writes declared tensors, in declared order, into size-bounded safetensors shards."""

    def __init__(self, out_dir: Path, layout: list[tuple[str, tuple[int, ...], torch.dtype]],
                 shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        self.out_dir = Path(out_dir)
        self.layout = ShardLayout.of(layout, shard_size)
        self.shards = self.layout.shards
        self.files = list(self.layout.files)
        self._order = [(i, e) for i, shard in enumerate(self.shards) for e in shard]
        self._next = 0
        self._fh: BinaryIO | None = None
        self._shard = -1
        self.bytes_written = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor; it must be the next declared name with the declared shape/dtype."""
        if self._next >= len(self._order):
            raise MergeError(f"writer got tensor {name} after every declared tensor was written")
        shard, e = self._order[self._next]
        if name != e.name or tuple(tensor.shape) != e.shape or tensor.dtype != e.dtype:
            raise MergeError(f"writer expected tensor {e.name} {list(e.shape)} {e.dtype}, "
                             f"got {name} {list(tensor.shape)} {tensor.dtype}")
        if shard != self._shard:
            self._open(shard)
        data = tensor.detach().to("cpu").contiguous()
        if e.nbytes:
            self._fh.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
        self.bytes_written += e.nbytes
        self._next += 1

    def _open(self, shard: int) -> None:
        self._close()
        self._fh = open(self.out_dir / self.files[shard], "wb")  # noqa: SIM115 - stays open across write() calls
        header = self.layout.header(shard)
        self._fh.write(header)
        self.bytes_written += len(header)
        self._shard = shard

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None

    def finish(self) -> list[str]:
        """Close the last shard, write the index for multi-shard output; returns the files written."""
        self._close()
        if self._next != len(self._order):
            raise MergeError(f"merge stopped after {self._next} of {len(self._order)} tensors")
        index = self.layout.index_json()
        if index is not None:
            (self.out_dir / INDEX_FILE).write_bytes(index)
            return [*self.files, INDEX_FILE]
        return list(self.files)

    def abort(self) -> None:
        self._close()
