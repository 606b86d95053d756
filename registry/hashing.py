"""Fast sha256 of model files: whole files, per-tensor digests, many files in parallel.

    digest = sha256_file(path)                                  # one core, hashlib speed
    results = hash_files({"model.safetensors": path}, tensors={"model.safetensors": ranges})

hashlib releases the GIL while it hashes large buffers, so threads give real parallelism:
files are hashed on a thread pool, and within a file the per-tensor digests and an optional
copy into the content store run on their own threads over the same buffer the file digest
reads, so asking for them costs CPU but little wall time when cores are free, and the file is
read once.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BUFFER_BYTES = 8 << 20  # large reads amortize syscalls and per-chunk thread hand-offs
RING_BUFFERS = 4  # per file being fanned out: 32 MiB, enough slack for consumers to drift apart

ProgressFn = Callable[[int, int], None]
TensorRange = tuple[str, int, int]  # (tensor name, absolute start, absolute end) in the file


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size: int
    tensors: dict[str, str] = field(default_factory=dict)


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Plain sha256 of one file with a reused buffer (readinto) — the single-core fast path."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_buffer_size(f))
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            if on_bytes:
                on_bytes(n)
    return h.hexdigest()


def _buffer_size(f: BinaryIO) -> int:
    """Small files get a buffer just large enough (plus one byte to see EOF in one read), so
    hashing many small files does not allocate and zero 8 MiB each time."""
    return min(BUFFER_BYTES, os.fstat(f.fileno()).st_size + 1)


class _TensorHasher:
    """Feeds consecutive chunks of a file to one sha256 per tensor byte range."""

    def __init__(self, ranges: Sequence[TensorRange]):
        self.ranges = sorted(ranges, key=lambda r: (r[1], r[2]))
        self.hashers = [hashlib.sha256() for _ in self.ranges]
        self.first = 0  # index of the first range that may still receive bytes

    def update(self, chunk: memoryview, offset: int) -> None:
        end = offset + len(chunk)
        i = self.first
        while i < len(self.ranges):
            _, start, stop = self.ranges[i]
            if start >= end:
                break
            if stop > offset:
                lo, hi = max(start, offset), min(stop, end)
                self.hashers[i].update(chunk[lo - offset:hi - offset])
            if stop <= end:
                self.first = i + 1
            i += 1

    def digests(self) -> dict[str, str]:
        return {name: h.hexdigest() for (name, _, _), h in zip(self.ranges, self.hashers, strict=True)}


def hash_file(path: Path, tensors: Sequence[TensorRange] = (), sink: BinaryIO | None = None,
              on_bytes: Callable[[int], None] | None = None) -> FileDigest:
    """sha256 of the file, plus one sha256 per tensor range and a copy into `sink` when asked.

    The file is read once; the whole-file digest, the tensor digests and the copy each consume
    the same buffers on their own thread (see `_fan_out`).
    """
    if not tensors and sink is None:
        size = os.path.getsize(path)
        return FileDigest(sha256_file(path, on_bytes), size)
    whole = hashlib.sha256()
    per_tensor = _TensorHasher(tensors)
    consumers: list[Callable[[memoryview, int], object]] = [lambda chunk, _off: whole.update(chunk)]
    if tensors:
        consumers.append(per_tensor.update)
    if sink is not None:
        consumers.append(lambda chunk, _off: sink.write(chunk))
    with open(path, "rb", buffering=0) as f:
        size = _fan_out(f, consumers, on_bytes)
    return FileDigest(whole.hexdigest(), size, per_tensor.digests())


def _fan_out(f: BinaryIO, consumers: Sequence[Callable[[memoryview, int], object]],
             on_bytes: Callable[[int], None] | None) -> int:
    """Read `f` once into a ring of buffers and feed every chunk to every consumer.

    Each consumer runs on its own thread at its own pace; a buffer is reused only after all of
    them are done with it. Unlike a lock-step barrier per chunk, consumers may drift up to
    RING_BUFFERS chunks apart, which absorbs scheduling jitter on a busy machine.
    """
    size = _buffer_size(f)
    bufs = [bytearray(size) for _ in range(RING_BUFFERS if size == BUFFER_BYTES else 1)]
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(len(bufs)):
        free.put(slot)
    users = [0] * len(bufs)
    lock = threading.Lock()
    errors: list[BaseException] = []
    inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in consumers]

    def consume(fn: Callable[[memoryview, int], object], inbox: queue.SimpleQueue) -> None:
        failed = False
        while (item := inbox.get()) is not None:
            slot, n, offset = item
            if not failed:
                try:
                    fn(memoryview(bufs[slot])[:n], offset)
                except BaseException as exc:  # handed to the reader, which re-raises it
                    errors.append(exc)
                    failed = True
            with lock:
                users[slot] -= 1
                done = users[slot] == 0
            if done:
                free.put(slot)

    threads = [threading.Thread(target=consume, args=(fn, box), name="hash-fanout", daemon=True)
               for fn, box in zip(consumers, inboxes, strict=True)]
    for t in threads:
        t.start()
    offset = 0
    try:
        while not errors:
            slot = free.get()
            n = f.readinto(bufs[slot])
            if not n:
                break
            users[slot] = len(consumers)  # nobody holds this slot now, so no lock is needed
            for box in inboxes:
                box.put((slot, n, offset))
            offset += n
            if on_bytes:
                on_bytes(n)
    finally:
        for box in inboxes:
            box.put(None)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return offset


def hash_files(paths: Mapping[str, Path], tensors: Mapping[str, Sequence[TensorRange]] | None = None,
               workers: int | None = None, progress: ProgressFn | None = None,
               per_file: Callable[[str, Path, Sequence[TensorRange], Callable[[int], None]], FileDigest] | None = None,
               ) -> dict[str, FileDigest]:
    """Hash many files in parallel: {name: path} → {name: FileDigest}.

    `per_file(name, path, ranges, on_bytes)` replaces the default `hash_file` (the store uses
    it to copy while hashing). Largest files start first so the pool finishes together.
    """
    tensors = tensors or {}
    total = sum(os.path.getsize(p) for p in paths.values())
    done = 0
    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            if progress:
                progress(done, total)

    def one(name: str) -> FileDigest:
        ranges = tensors.get(name, ())
        if per_file is not None:
            return per_file(name, paths[name], ranges, on_bytes)
        return hash_file(paths[name], ranges, on_bytes=on_bytes)

    order = sorted(paths, key=lambda n: -os.path.getsize(paths[n]))
    n_workers = max(1, min(len(order), workers or available_cpus()))
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(n_workers, thread_name_prefix="hash-files") as pool:
        results = dict(zip(order, pool.map(one, order), strict=True))
    return {name: results[name] for name in sorted(results)}
