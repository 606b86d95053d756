"""Lazy safetensors reading: one tensor at a time, straight from the files, across shards.

    reader = ModelReader(Path("experts/math"))
    reader.info("model.embed_tokens.weight").shape      # from the header, nothing loaded
    t = reader.get("model.embed_tokens.weight")          # a fresh float32 tensor

The input side of the executor. Headers are parsed once; a tensor's bytes are fetched with a
positioned read (`os.preadv`) into a fresh buffer, so the process holds only the tensors it is
working on: unlike an mmap, pages already read do not stay in the resident set. Reads are
thread-safe. Only safetensors are read; pickled checkpoints are refused, never opened.
`CENSUS` counts tensors handed out that are still alive, and their bytes (the streaming-memory
test reads it).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merge.errors import MergeInputError

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}


class TensorCensus:
    """Live count and bytes (and their peaks) of tensors registered with `track`; freed tensors
    leave the count. A tracked view of a tracked tensor counts again: the bytes are an upper bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.live = 0
        self.peak = 0
        self.live_bytes = 0
        self.peak_bytes = 0

    def track(self, t: torch.Tensor) -> torch.Tensor:
        nbytes = t.numel() * t.element_size()
        with self._lock:
            self.live += 1
            self.peak = max(self.peak, self.live)
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(t, self._release, nbytes)
        return t

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.live -= 1
            self.live_bytes -= nbytes

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.live
            self.peak_bytes = self.live_bytes


CENSUS = TensorCensus()


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor's bytes are: file, absolute byte range, dtype code (e.g. "BF16"), shape."""

    name: str
    file: Path
    start: int
    end: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in ("F64", "F32", "F16", "BF16")


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse one safetensors file's header into TensorInfo entries (absolute offsets)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise MergeInputError(f"{path} is not a safetensors file (shorter than its header length)")
            (size,) = struct.unpack("<Q", raw)
            if size > MAX_HEADER:
                raise MergeInputError(f"{path} is not a safetensors file (header length {size} is implausible)")
            header = json.loads(f.read(size))
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"cannot read safetensors header of {path}: {exc}") from exc
    base = 8 + size
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry.get("dtype") not in DTYPES:
            raise MergeInputError(f"{path}: tensor {name} has unsupported dtype {entry.get('dtype')!r}")
        a, b = entry["data_offsets"]
        out[name] = TensorInfo(name, path, base + a, base + b, entry["dtype"], tuple(entry["shape"]))
    return out


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder (via the index file when there is one)."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise MergeInputError(f"{index} is not a valid safetensors index (needs a 'weight_map')") from exc
        files = [folder / f for f in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise MergeInputError(f"{folder}: shard {missing[0]} named in {INDEX_FILE} is missing")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found {pickled[0]}: pickled checkpoints are refused; convert it to safetensors)" if pickled else ""
        raise MergeInputError(f"model folder {folder} has no *.safetensors weights{hint}")
    return files


class ModelReader:
    """Read access to one model folder's tensors; nothing is loaded until `get`."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MergeInputError(f"model folder {self.folder} does not exist (give a folder with config.json "
                                  "and *.safetensors, or a model id the registry holds)")
        self._infos: dict[str, TensorInfo] = {}
        for file in weight_files(self.folder):
            self._infos.update(read_header(file))
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self._infos)

    def has(self, name: str) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise MergeInputError(f"model {self.folder} has no tensor {name}") from None

    def config(self) -> dict[str, Any]:
        path = self.folder / "config.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise MergeInputError(f"cannot read {path}: {exc}") from exc

    def _fd(self, file: Path) -> int:
        with self._lock:
            if file not in self._fds:
                self._fds[file] = os.open(file, os.O_RDONLY)
            return self._fds[file]

    # Row ranges are read from the file alone (merge.executor merges large tensors in pieces).
    ranged = True

    def get_raw(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor in its stored dtype, in a fresh CPU buffer the caller owns; `rows=(a, b)`
        reads only rows a..b-1 of the first dimension (only those bytes are read)."""
        info = self.info(name)
        start, shape = info.start, info.shape
        nbytes = info.end - info.start
        if rows is not None:
            a, b = rows
            if not shape or not 0 <= a <= b <= shape[0]:
                raise MergeInputError(f"rows {a}..{b} are outside tensor {name} of shape {list(shape)}")
            row_bytes = nbytes // shape[0] if shape[0] else 0
            start, nbytes, shape = start + a * row_bytes, (b - a) * row_bytes, (b - a, *shape[1:])
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy()) if nbytes else memoryview(b"")
        fd, done = self._fd(info.file), 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], start + done)
            if n <= 0:
                raise MergeInputError(f"{info.file} is truncated: tensor {name} ends past the end of the file")
            done += n
        return buf.view(info.torch_dtype).reshape(shape)

    def get(self, name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32,
            rows: int | None = None, row_range: tuple[int, int] | None = None) -> torch.Tensor:
        """A fresh tensor (converted to `dtype` for floating tensors) on `device`, counted in CENSUS.
        `rows` keeps only the first rows (vocabulary alignment); `row_range=(a, b)` reads only rows
        a..b-1 (streaming a large tensor in pieces)."""
        t = self.get_raw(name, row_range)
        if rows is not None and rows < t.shape[0]:
            t = t[:rows]
        convert = dtype is not None and t.is_floating_point()
        t = t.to(device=device, dtype=dtype if convert else t.dtype)
        return CENSUS.track(t.contiguous())

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __enter__(self) -> ModelReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fds", None):
            self.close()
