"""Blob fetching: stream content-addressed blobs from holders into the store, resumably.

    fetcher = BlobFetcher(store, holders=["127.0.0.1:7471", ...], peers=table, progress=cb)
    fetcher.fetch_all({digest_hex: size_hint, ...}, signed_sizes={digest_hex: size, ...})

Each blob streams into the store's kept `.incomplete` file from its current size, so a pull
interrupted by a dead holder or a killed puller resumes where it stopped. Only the holder of
the store's `blob_lock` writes a partial file: another pull of the same blob into this home
(a thread or a process) waits, then finds the blob stored. `commit_partial` checks the size
and sha256 of what was written before the blob enters the store. A holder that dies is marked bad and the
next one resumes the partial file; a holder whose bytes do not hash to the signed digest is
marked bad and the partial discarded. Several blobs stream at once, so hashing one blob
overlaps with receiving the next.

A stream is held to the blob's size signed in the manifest: a holder that sends one byte more
is lying and is cut off. Advertised sizes are unsigned, so they are progress hints only. For a
manifest that signs no sizes (an older one), what bounds a stream is an absolute per-blob cap
(MAX_BLOB_BYTES, env MERGENET_MAX_BLOB_BYTES), the streaming holder's own `total_size` claim,
and free disk space: a stream past every size anyone stated stops at MIN_FREE_BYTES free (env
MERGENET_MIN_FREE_BYTES), one within a stated size may use half that reserve (so a flood is
always cut before it can starve an honest stream running beside it). A holder that streams past
the cap, its own claim, or the reserve has its partial file deleted and is marked bad; a blob
that genuinely does not fit stops the pull with DiskSpaceError (partial kept to resume).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from node.errors import NodeError, PeerError
from node.network.client import connect, transfer_stub
from node.network.peers import PeerTable
from node.process import metrics
from node.transfer.writeback import Writeback
from protos import mergenet_pb2 as pb
from registry.errors import RegistryError, VerificationError
from registry.hashing import FileDigest
from registry.store import BlobStore

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
# Blobs streamed at once: enough to overlap network, disk and hashing of sharded checkpoints.
PARALLEL_BLOBS = 4
TAMPERED = "tampered bytes"
# A transfer that delivers no chunk for this long is cancelled and the holder marked bad.
STALL_TIMEOUT_S = 30.0
STALL_POLL_S = 0.5
HASH_READ_BYTES = 8 << 20  # re-hashing a kept partial file on resume
# No blob is ever larger than this, whatever an ad or a holder claims (the largest single
# safetensors shards in the wild are ~10-20 GiB); beyond it the holder is lying.
MAX_BLOB_BYTES = 64 << 30
MAX_BLOB_ENV = "MERGENET_MAX_BLOB_BYTES"
# Streaming stops before the store's disk has less than this free (the OS, logs and the
# registry's own files need room too).
MIN_FREE_BYTES = 1 << 30
MIN_FREE_ENV = "MERGENET_MIN_FREE_BYTES"


class DiskSpaceError(NodeError):
    """The store's disk has too little room left for the blobs being pulled (exit 1)."""


class StreamOverrun(PeerError):
    """A holder streamed more bytes than any believable size of the blob."""


def _limit(value: int | None, env: str, default: int) -> int:
    if value is not None:
        return value
    raw = os.environ.get(env, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        log.info("ignoring %s=%r: not an integer number of bytes", env, raw)
        return default


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _cancel_when_stalled(stream: grpc.Future, deadline: list[float], done: threading.Event) -> None:
    while not done.wait(STALL_POLL_S):
        if time.monotonic() > deadline[0]:
            log.info("transfer stalled for longer than the stall timeout; cancelling it")
            stream.cancel()
            return


class BlobFetcher:
    def __init__(self, store: BlobStore, holders: list[str], peers: PeerTable,
                 progress: ProgressFn | None = None, stall_timeout_s: float = STALL_TIMEOUT_S,
                 on_blob: Callable[[str], None] | None = None, max_blob_bytes: int | None = None,
                 min_free_bytes: int | None = None) -> None:
        self.store = store
        self.max_blob_bytes = _limit(max_blob_bytes, MAX_BLOB_ENV, MAX_BLOB_BYTES)
        self.min_free_bytes = _limit(min_free_bytes, MIN_FREE_ENV, MIN_FREE_BYTES)
        self.on_blob = on_blob  # called (in a worker thread) with each digest once it is in the store
        self.stall_timeout_s = stall_timeout_s
        self.holders = holders
        self.peers = peers
        self.progress = progress
        self.fetched = 0  # bytes received over the network (resumed bytes are not counted)
        self.sources: list[str] = []
        self._lock = threading.Lock()
        self._have: dict[str, int] = {}
        self._signed: dict[str, int] = {}
        self._total = 0

    def fetch_all(self, blobs: Mapping[str, int], signed_sizes: Mapping[str, int] | None = None) -> None:
        """Fetch every blob (digest hex → advisory size) not yet in the store. `signed_sizes`
        (digest hex → size from the verified manifest) are exact: a stream past one is a lie."""
        self._signed = dict(signed_sizes or {})
        blobs = {**blobs, **self._signed}
        # Sizes are unsigned hints: clamp them so a lying ad cannot skew progress or ordering.
        blobs = {digest: max(0, min(int(size), self.max_blob_bytes)) for digest, size in blobs.items()}
        self._total = sum(blobs.values())
        missing = []
        for digest, size in blobs.items():
            self._have[digest] = size if self._in_store(digest) else self._partial_size(digest)
            if not self._in_store(digest):
                missing.append(digest)
        self._report()
        missing.sort(key=lambda d: -blobs[d])  # biggest first: the last one to finish is small
        with ThreadPoolExecutor(max_workers=PARALLEL_BLOBS, thread_name_prefix="fetch") as pool:
            futures = [pool.submit(self.fetch, digest, blobs[digest]) for digest in missing]
            for future in futures:
                future.result()

    def fetch(self, digest: str, size_hint: int) -> None:
        """Get one blob into the store; PeerError (VerificationError if all lied) when every holder failed."""
        with self.store.blob_lock(digest):
            if self._in_store(digest):  # another pull of this home fetched it while we waited
                self._stored(digest, size_hint, None)
                return
            self._fetch_locked(digest, size_hint)

    def _stored(self, digest: str, size_hint: int, addr: str | None) -> None:
        with self._lock:
            self._have[digest] = max(self._have.get(digest, 0), size_hint, self._stored_size(digest))
            if addr is not None and addr not in self.sources:
                self.sources.append(addr)
        if addr is not None:  # its bytes hashed to the signed digest: holder lists rank it first
            self.peers.served(addr)
        self._report()
        if self.on_blob is not None:
            self.on_blob(digest)

    def _fetch_locked(self, digest: str, size_hint: int) -> None:
        failures = []
        queue = self.peers.order(self.holders)  # good holders first, known-bad ones last
        refetched: set[str] = set()
        while queue:
            addr = queue.pop(0)
            resumed = self._partial_size(digest) > 0
            try:
                hashed_as = self._stream(addr, digest, size_hint)
                self.store.commit_partial(digest, hashed_as=hashed_as)
            except StreamOverrun as exc:
                self._discard(digest)  # unverifiable bytes nobody vouched for: never keep them
                log.info("%s; abandoning it", exc)
                self.peers.mark_bad(addr, str(exc))
                failures.append(f"{addr}: streamed too much")
                continue
            except grpc.RpcError as exc:
                log.info("holder %s failed while sending %s: %s", addr, digest[:16], exc.code().name)
                failures.append(f"{addr}: {exc.code().name}")
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:  # our partial is longer than the blob
                    self._discard(digest)
                elif exc.code() != grpc.StatusCode.NOT_FOUND:  # dead, stalled (CANCELLED) or refusing
                    self.peers.mark_unreachable(addr, f"transfer failed: {exc.code().name}")
                continue  # the partial file keeps what arrived; the next holder resumes it
            except VerificationError:
                self._discard(digest)
                if resumed and addr not in refetched:
                    # The bad bytes may predate this holder (an earlier transfer, another holder):
                    # blame it only for a blob it served whole.
                    log.info("resumed blob %s does not verify; fetching it whole from %s", digest[:16], addr)
                    refetched.add(addr)
                    queue.insert(0, addr)
                    continue
                log.info("holder %s sent bytes that do not hash to %s; abandoning it", addr, digest[:16])
                self.peers.mark_bad(addr, f"served bytes that do not match sha256:{digest}")
                failures.append(f"{addr}: {TAMPERED}")
                continue
            self._stored(digest, size_hint, addr)
            return
        summary = "; ".join(failures) or "no holders"
        if failures and all(f.endswith(TAMPERED) for f in failures):
            raise VerificationError(f"every holder of blob sha256:{digest} served bytes that do not match the "
                                    f"signed manifest ({summary})")
        raise PeerError(f"could not fetch blob sha256:{digest} from any holder ({summary})")

    def _in_store(self, digest: str) -> bool:
        """Stored, and not of a size other than the signed one (such bytes are corrupt: fetching
        the blob again replaces them)."""
        signed = self._signed.get(digest)
        return self.store.has(digest) and (signed is None or self._stored_size(digest) == signed)

    def _partial_size(self, digest: str) -> int:
        try:
            return self.store.partial_path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def _stored_size(self, digest: str) -> int:
        try:
            return self.store.size(digest)
        except (OSError, RegistryError):
            return 0

    def _discard(self, digest: str) -> None:
        self.store.partial_path(digest).unlink(missing_ok=True)
        with self._lock:
            self._have[digest] = 0

    def _stream(self, addr: str, digest: str, size_hint: int) -> FileDigest:
        """Append the holder's bytes to the partial file and return the sha256 and size of the
        whole file, hashed as it is written (so committing it needs no second read); a stream silent for
        stall_timeout_s is cancelled (a holder that hangs is as useless as a dead one); StreamOverrun
        past any believable size, DiskSpaceError when the disk would fill."""
        offset = self._partial_size(digest)
        part_dir = self.store.partial_path(digest).parent
        part_dir.mkdir(parents=True, exist_ok=True)
        if free_bytes(part_dir) < self.min_free_bytes // 2:
            raise DiskSpaceError(f"only {free_bytes(part_dir) >> 20} MiB free on the disk of {part_dir}; "
                                 f"free at least {self.min_free_bytes >> 20} MiB more and pull again")
        # The size the stream is held to: the publisher's signed one, else the streaming holder's
        # own statement (None: none yet).
        signed = self._signed.get(digest)
        claimed = signed
        hasher = _hash_prefix(self.store.partial_path(digest), offset)
        with connect(addr) as ch, open(self.store.partial_path(digest), "ab") as out:
            stream = transfer_stub(ch).Fetch(pb.FetchRequest(digest=digest, offset=offset), timeout=None)
            writeback = Writeback(out, start=offset)
            deadline = [time.monotonic() + self.stall_timeout_s]
            done = threading.Event()
            threading.Thread(target=_cancel_when_stalled, args=(stream, deadline, done), daemon=True).start()
            try:
                for chunk in stream:
                    if chunk.offset != offset:
                        stream.cancel()
                        raise VerificationError(f"holder {addr} sent bytes at the wrong offset for {digest}")
                    if signed is None:
                        claimed = claimed or chunk.total_size or None
                    data = chunk.data  # each access to a protobuf bytes field copies it: once
                    n = len(data)
                    try:
                        self._check_room(addr, digest, offset + n, n, max(size_hint, claimed or 0), claimed,
                                         out.fileno())
                    except NodeError:
                        stream.cancel()
                        raise
                    if not n:
                        continue  # an empty chunk is no progress: it must not hold off the stall timeout
                    out.write(data)
                    writeback.wrote(n)
                    hasher.update(data)
                    offset += n
                    deadline[0] = time.monotonic() + self.stall_timeout_s
                    metrics.record_fetched(n)
                    with self._lock:
                        self.fetched += n
                        self._have[digest] = offset
                    self._report()
            finally:
                done.set()
        return FileDigest(hasher.hexdigest(), offset)

    def _check_room(self, addr: str, digest: str, end: int, n: int, stated: int, claimed: int | None,
                    fd: int) -> None:
        """Refuse to grow the partial file of `digest` by `n` bytes to `end` past the cap, past the
        holder's own claim, or into the disk's reserve; `stated` is the largest size anyone gave."""
        where = f"holder {addr} streamed more than"
        if end > self.max_blob_bytes:
            raise StreamOverrun(f"{where} the {self.max_blob_bytes}-byte cap for one blob (sha256:{digest[:16]}…)")
        if claimed is not None and end > claimed:
            raise StreamOverrun(f"{where} the {claimed} bytes blob sha256:{digest[:16]}… has")
        st = os.fstatvfs(fd)
        free = st.f_bavail * st.f_frsize
        unstated = end > stated  # nobody said the blob is this big: the streamer may be filling our disk
        if free - n >= (self.min_free_bytes if unstated else self.min_free_bytes // 2):
            return
        if unstated:
            raise StreamOverrun(f"{where} anyone stated for blob sha256:{digest[:16]}… until the disk was nearly full")
        raise DiskSpaceError(f"blob sha256:{digest[:16]}… needs more room than the disk has ({free >> 20} MiB free, "
                             f"{self.min_free_bytes >> 20} MiB kept in reserve); free some space and pull again")

    def _report(self) -> None:
        if self.progress is None:
            return
        with self._lock:
            done = sum(self._have.values())
        self.progress(done, max(self._total, done))


def _hash_prefix(path: Path, length: int) -> hashlib._Hash:
    """A sha256 already fed the first `length` bytes of a kept partial file (a resumed download)."""
    hasher = hashlib.sha256()
    if length:
        with open(path, "rb") as f:
            while chunk := f.read(min(HASH_READ_BYTES, length - f.tell())):
                hasher.update(chunk)
    return hasher
