"""Content-addressed blob store: every file of every model, named by the sha256 of its bytes.

    store = BlobStore(home.store_dir, home.tmp_dir)
    digest = store.put_file(path); store.path(digest).read_bytes()

Writes are atomic (temp file in the same filesystem, fsync, rename), so a blob either exists
whole under its digest or not at all. Identical files are stored once. Every install checks
that the file holds exactly the bytes that were hashed (size) and that they hash to the name
it gets; nothing else ever writes under `sha256/`.

Resumable downloads write `partial_path(digest)` (a kept `.incomplete` file) and finish with
`commit_partial`. One writer per blob: `blob_lock(digest)` is an OS file lock (flock on a
`.lock` file beside the partial), so two threads, or two processes pulling into one home,
never append to the same partial; a second writer waits, then finds the blob in the store.

    with store.blob_lock(digest):
        if not store.has(digest):
            ... append to store.partial_path(digest) ...; store.commit_partial(digest, hashed_as=...)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from registry.errors import RegistryError, VerificationError
from registry.hashing import FileDigest, TensorRange, hash_file, sha256_file
from registry.statements import strip_sha256

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".incomplete"
LOCK_SUFFIX = ".lock"
BLOB_DIR, PARTIAL_DIR = "sha256", "partial"
_HEX = frozenset("0123456789abcdef")


class _FullWriter:
    """A file-like sink over a raw fd that never leaves a write half done."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data: memoryview | bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)


class BlobStore:
    """Blobs under `root/sha256/<2 hex>/<64 hex>`, partial downloads under `root/partial/`."""

    def __init__(self, root: Path, tmp_dir: Path | None = None):
        self.root = Path(root)
        self.tmp_dir = Path(tmp_dir) if tmp_dir else self.root / "tmp"
        for d in (self.root / BLOB_DIR, self.root / PARTIAL_DIR, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        hexd = strip_sha256(digest)
        return self.root / BLOB_DIR / hexd[:2] / hexd

    def lock_path(self, digest: str) -> Path:
        return self.root / PARTIAL_DIR / (strip_sha256(digest) + LOCK_SUFFIX)

    @contextmanager
    def blob_lock(self, digest: str, wait: bool = True) -> Iterator[bool]:
        """Be the one writer of `digest` (its partial file and its install) while inside.

        Re-entrant within a thread; other threads and processes wait (`wait=False`: yields False
        at once instead of waiting, and the caller must not write)."""
        with _locked(self.lock_path(digest), wait) as held:
            yield held

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise RegistryError(f"blob {digest} is not in the store at {self.root}") from None

    def _holds(self, digest: str, size: int) -> bool:
        """The blob is stored with the right size (bytes of another size are corrupt, to replace)."""
        try:
            return self.path(digest).stat().st_size == size
        except FileNotFoundError:
            return False

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise RegistryError(f"blob {digest} is not in the store at {self.root}") from None

    @contextmanager
    def _temp(self) -> Iterator[tuple[int, Path]]:
        fd, name = tempfile.mkstemp(prefix="blob-", suffix=".tmp", dir=self.tmp_dir)
        tmp = Path(name)
        try:
            yield fd, tmp
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
            tmp.unlink(missing_ok=True)

    def _install(self, tmp: Path, hexd: str, size: int) -> None:
        """Move a complete temp file whose bytes hashed to `hexd` into place, once it is seen to
        hold exactly the `size` bytes that were hashed (a no-op when the blob is already there)."""
        actual = os.stat(tmp).st_size
        if actual != size:
            raise VerificationError(f"blob sha256:{hexd} was to be stored from {size} hashed bytes, but {tmp} "
                                    f"holds {actual}; refused it")
        with self.blob_lock(hexd):
            dest = self.path(hexd)
            try:
                if dest.stat().st_size == size:
                    return
                # Bytes that cannot be the blob (wrong size) are corrupt: the verified copy wins.
                log.warning("replacing corrupt blob sha256:%s (%d bytes on disk, %d expected)", hexd,
                            dest.stat().st_size, size)
            except FileNotFoundError:
                pass
            dest.parent.mkdir(exist_ok=True)
            os.chmod(tmp, 0o444)  # blobs are immutable; a stray write fails loudly
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)

    def put_file(self, path: Path, digest: str | None = None) -> str:
        """Copy a file in, hashing while copying; when `digest` is given the bytes must match it."""
        if digest is not None and self._holds(digest, os.stat(path).st_size):
            return "sha256:" + strip_sha256(digest)
        return "sha256:" + self.put_hashed(path, expected=digest).sha256

    def put_hashed(self, path: Path, tensors: Sequence[TensorRange] = (), expected: str | None = None,
                   on_bytes=None) -> FileDigest:
        """Copy `path` into the store in one read that also yields its file and tensor digests."""
        with self._temp() as (fd, tmp):
            result = hash_file(path, tensors, sink=_FullWriter(fd), on_bytes=on_bytes)
            if expected is not None and result.sha256 != strip_sha256(expected):
                raise VerificationError(f"{path} changed while it was being stored: expected sha256 "
                                        f"{strip_sha256(expected)}, got {result.sha256}")
            os.fsync(fd)
            self._install(tmp, result.sha256, result.size)
        return result

    def put_bytes(self, data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        if not self._holds(hexd, len(data)):
            with self._temp() as (fd, tmp):
                _FullWriter(fd).write(data)
                os.fsync(fd)
                self._install(tmp, hexd, len(data))
        return "sha256:" + hexd

    def partial_path(self, digest: str) -> Path:
        """Where a resumable download of `digest` keeps its bytes (append to it, then commit)."""
        return self.root / "partial" / (strip_sha256(digest) + PARTIAL_SUFFIX)

    def commit_partial(self, digest: str, hashed_as: FileDigest | None = None) -> Path:
        """Verify a finished partial download and move it into the store; VerificationError (and
        the partial file is removed, since resuming it could never succeed) when the bytes differ.

        `hashed_as` is the sha256 and byte count the downloader computed while writing the file
        (under `blob_lock`); it spares a second read of the whole blob. The file must hold exactly
        that many bytes: a partial that grew behind the downloader's back is refused."""
        hexd = strip_sha256(digest)
        with self.blob_lock(hexd):
            part = self.partial_path(hexd)
            if not part.is_file():
                raise RegistryError(f"no partial download for {digest} at {part}")
            size = part.stat().st_size
            if hashed_as is None:
                hashed_as = FileDigest(sha256_file(part), size)
            if hashed_as.size != size:
                part.unlink(missing_ok=True)
                raise VerificationError(f"partial download of {digest} holds {size} bytes but {hashed_as.size} "
                                        "were received and hashed (another writer?); discarded it")
            if strip_sha256(hashed_as.sha256) != hexd:
                part.unlink(missing_ok=True)
                raise VerificationError(f"downloaded blob {digest} hashes to sha256:{hashed_as.sha256}; discarded it")
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            self._install(part, hexd, size)
            part.unlink(missing_ok=True)
        return self.path(hexd)

    def remove_corrupt(self, digest: str) -> bool:
        """Delete a stored blob whose bytes, re-hashed under its lock, are not its name (so a good
        blob is never lost, not even one installed a moment ago); True when it was removed."""
        hexd = strip_sha256(digest)
        with self.blob_lock(hexd):
            dest = self.path(hexd)
            if not dest.is_file() or sha256_file(dest) == hexd:
                return False
            dest.unlink()
            _fsync_dir(dest.parent)
            return True

    def remove_partial(self, digest: str) -> bool:
        """Delete the partial download of `digest` unless a writer is busy with it right now."""
        with self.blob_lock(digest, wait=False) as held:
            if not held or not self.partial_path(digest).exists():
                return False
            self.partial_path(digest).unlink()
            return True

    def blob_files(self) -> Iterator[Path]:
        """Every file under the blob tree, named like a blob or not (for `store check`)."""
        for sub in sorted((self.root / BLOB_DIR).iterdir()):
            if sub.is_dir():
                yield from sorted(p for p in sub.iterdir())
            else:
                yield sub

    def partial_digests(self) -> list[str]:
        """Digests with a kept partial download."""
        return self._digests_in_partial_dir(PARTIAL_SUFFIX)

    def sweep_partials(self) -> list[str]:
        """Remove every partial download (and leftover lock file) no writer holds right now;
        the digests whose partial files were removed."""
        removed = [d for d in self.partial_digests() if self.remove_partial(d)]
        for digest in self._digests_in_partial_dir(LOCK_SUFFIX):
            with self.blob_lock(digest, wait=False):
                pass  # taking and dropping a free lock removes its file
        return removed

    def _digests_in_partial_dir(self, suffix: str) -> list[str]:
        names = (p.name[:-len(suffix)] for p in (self.root / PARTIAL_DIR).glob("*" + suffix))
        return sorted(n for n in names if len(n) == 64 and set(n) <= _HEX)

    def copy_out(self, digest: str, dest: Path) -> None:
        """Copy a blob to `dest` (writable, unlike the store's read-only blob)."""
        src = self.path(digest)
        if not src.is_file():
            raise RegistryError(f"blob {digest} is not in the store at {self.root}")
        shutil.copyfile(src, dest)


_held = threading.local()  # lock path -> [fd, depth] of the locks this thread holds


@contextmanager
def _locked(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive flock on `path`, re-entrant per thread. flock (unlike fcntl record locks)
    belongs to an open file, so a second thread of this process is excluded like any process;
    the OS drops the lock of a process that dies, so a crashed puller never blocks the next."""
    table: dict[str, list[int]] = _held.__dict__.setdefault("locks", {})
    key = str(path)
    if key in table:
        table[key][1] += 1
        try:
            yield True
        finally:
            table[key][1] -= 1
        return
    fd = _acquire(path, wait)
    if fd is None:
        yield False
        return
    table[key] = [fd, 1]
    try:
        yield True
    finally:
        del table[key]
        # Unlinked while still locked: a waiter on this file sees it gone and locks a fresh one.
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(path: Path, wait: bool) -> int | None:
    """A descriptor holding the flock of `path` (None when busy and not `wait`)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    return None
                log.info("waiting for another writer of %s", path.name)
                fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            current = os.stat(path)
        except FileNotFoundError:  # the previous holder removed the file as it let go
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; some filesystems refuse fsync on directories, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
