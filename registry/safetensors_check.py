"""Validate a safetensors file's header before anything uses its bytes.

    info = check_safetensors(path)      # SafetensorsInfo or BadModelError naming file + problem
    info.tensors["lm_head.weight"].shape

Checks: the 8-byte little-endian header length is bounded (MAX_HEADER_BYTES, before a byte of
the header is read) and fits the file; the header is a UTF-8 JSON object without duplicate keys
and with at most MAX_TENSORS tensors (counted while it is decoded, so a header listing millions
of tiny tensors is refused after MAX_TENSORS of them, not after seconds of parsing);
`__metadata__` maps strings to strings; every tensor has a known dtype, a shape of
non-negative ints and `data_offsets` whose length equals numel × itemsize; the ranges lie
inside the data area, do not overlap, and — as the reference Rust implementation demands —
tile it exactly (no gaps, no trailing bytes).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import BadModelError

HEADER_LEN_BYTES = 8
# Header limits. A hostile header costs time and memory in proportion to its entries: 1.7M
# zero-size tensors in a 100 MB header took 32 s and 1.2 GB to check (issue 10). Real shards are
# far below both limits: a few hundred tensors per file (all of Llama-3.1-405B has ~1,100; the
# MoE giants spread tens of thousands of expert tensors over a hundred-odd shards), and a
# header of well under 1 MB.
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's own limit on the header length
MAX_TENSORS = 65_536  # per file
METADATA_KEY = "__metadata__"
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets relative to the data area, as in the header
    end: int


@dataclass(frozen=True)
class SafetensorsInfo:
    header_len: int
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]

    @property
    def data_start(self) -> int:
        """Absolute file offset of the first tensor byte."""
        return HEADER_LEN_BYTES + self.header_len


def check_safetensors(path: Path, name: str | None = None) -> SafetensorsInfo:
    """Validate `path` (reading only its header); `name` is how errors refer to the file."""
    label = name or str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_LEN_BYTES)
            if len(head) < HEADER_LEN_BYTES:
                raise BadModelError(f"{label}: truncated safetensors file ({size} bytes, no 8-byte header length)")
            (header_len,) = struct.unpack("<Q", head)
            check_header_len(header_len, size, label)
            raw = f.read(header_len)
    except OSError as exc:
        raise BadModelError(f"{label}: cannot read safetensors file: {exc.strerror or exc}") from None
    if len(raw) != header_len:
        raise BadModelError(f"{label}: truncated safetensors header")
    return parse_header(raw, size - HEADER_LEN_BYTES - header_len, label)


def check_header_len(header_len: int, file_size: int, label: str) -> None:
    if header_len > MAX_HEADER_BYTES:
        raise BadModelError(f"{label}: absurd safetensors header length of {header_len} bytes "
                            f"(limit {MAX_HEADER_BYTES} bytes)")
    if HEADER_LEN_BYTES + header_len > file_size:
        raise BadModelError(f"{label}: truncated safetensors file: header claims {header_len} bytes "
                            f"but the file has {file_size} bytes")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's insignificant whitespace


class _NotAnObject(Exception):
    """The header is some other JSON value (or none): refused without decoding it."""


class _TooManyTensors(Exception):
    """The header lists more than MAX_TENSORS tensors; decoding stopped there."""


def _decode_object(text: str) -> dict[str, Any]:
    """Decode a top-level JSON object one member at a time (each value by the C decoder), so
    that counting its tensors can stop the decoding; ValueError when it is not valid JSON."""
    ws = _WHITESPACE.match
    doc: dict[str, Any] = {}
    i = ws(text, 0).end()
    if text[i:i + 1] != "{":
        raise _NotAnObject
    i = ws(text, i + 1).end()
    if text[i:i + 1] == "}":
        i += 1
    else:
        while True:
            if text[i:i + 1] != '"':
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
            key, i = json.decoder.scanstring(text, i + 1, True)
            i = ws(text, i).end()
            if text[i:i + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            value, i = _DECODER.raw_decode(text, ws(text, i + 1).end())
            if key in doc:
                raise ValueError(f"duplicate key {key!r}")
            doc[key] = value
            if len(doc) - (METADATA_KEY in doc) > MAX_TENSORS:
                raise _TooManyTensors
            i = ws(text, i).end()
            if text[i:i + 1] == "}":
                i += 1
                break
            if text[i:i + 1] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = ws(text, i + 1).end()
    if ws(text, i).end() != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return doc


def parse_header(raw: bytes, data_len: int, label: str) -> SafetensorsInfo:
    """Validate a header's JSON against a data area of `data_len` bytes."""
    try:
        doc = _decode_object(raw.decode("utf-8"))
    except _NotAnObject:
        raise BadModelError(f"{label}: safetensors header is not a JSON object") from None
    except _TooManyTensors:
        raise BadModelError(f"{label}: safetensors header lists more than {MAX_TENSORS} tensors (limit "
                            f"{MAX_TENSORS} per file; shard the checkpoint into several files)") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadModelError(f"{label}: safetensors header is not valid JSON ({_short(exc)})") from None
    metadata = doc.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise BadModelError(f"{label}: safetensors __metadata__ must map strings to strings")
    tensors = {tname: _entry(tname, spec, label) for tname, spec in doc.items()}
    _check_ranges(tensors, data_len, label)
    return SafetensorsInfo(header_len=len(raw), tensors=tensors, metadata=dict(metadata))


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _entry(tname: str, spec: Any, label: str) -> TensorEntry:
    where = f"{label}: tensor {tname!r}"
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise BadModelError(f"{where} must be an object with exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise BadModelError(f"{where} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise BadModelError(f"{where} has a shape that is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]):
        raise BadModelError(f"{where} has data_offsets that are not [start, end] with 0 <= start <= end")
    nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
    if nbytes != offsets[1] - offsets[0]:
        raise BadModelError(f"{where}: shape {shape} of {dtype} needs {nbytes} bytes but data_offsets "
                            f"span {offsets[1] - offsets[0]}")
    return TensorEntry(dtype=dtype, shape=tuple(shape), start=offsets[0], end=offsets[1])


def _check_ranges(tensors: dict[str, TensorEntry], data_len: int, label: str) -> None:
    cursor, prev = 0, None
    for tname, t in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if t.end > data_len:
            raise BadModelError(f"{label}: tensor {tname!r} data_offsets [{t.start}, {t.end}] run past the end "
                                f"of the file (data area is {data_len} bytes; truncated?)")
        if t.start < cursor:
            raise BadModelError(f"{label}: tensors {prev!r} and {tname!r} have overlapping byte ranges")
        if t.start > cursor:
            raise BadModelError(f"{label}: {t.start - cursor} unaccounted bytes before tensor {tname!r}")
        cursor, prev = t.end, tname
    if cursor != data_len:
        raise BadModelError(f"{label}: {data_len - cursor} trailing bytes after the last tensor")
