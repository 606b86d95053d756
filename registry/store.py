"""Content-addressed blob store: every file of every model, named by the sha256 of its bytes.

    store = BlobStore(home.store_dir, home.tmp_dir)
    digest = store.put_file(path); store.path(digest).read_bytes()

Writes are atomic (temp file in the same filesystem, fsync, rename), so a blob either exists
whole under its digest or not at all. Identical files are stored once. Resumable downloads
write `partial_path(digest)` (a kept `.incomplete` file) and finish with `commit_partial`,
which refuses bytes whose sha256 is not the digest they were fetched for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from registry.errors import RegistryError, VerificationError
from registry.hashing import FileDigest, TensorRange, hash_file, sha256_file
from registry.statements import strip_sha256

PARTIAL_SUFFIX = ".incomplete"


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
        for d in (self.root / "sha256", self.root / "partial", self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        hexd = strip_sha256(digest)
        return self.root / "sha256" / hexd[:2] / hexd

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise RegistryError(f"blob {digest} is not in the store at {self.root}") from None

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

    def _install(self, tmp: Path, hexd: str) -> None:
        """Move a complete, verified temp file into place (no-op when the blob already exists)."""
        dest = self.path(hexd)
        if dest.exists():
            return
        dest.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)  # blobs are immutable; a stray write fails loudly
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)

    def put_file(self, path: Path, digest: str | None = None) -> str:
        """Copy a file in, hashing while copying; when `digest` is given the bytes must match it."""
        if digest is not None and self.has(digest):
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
            self._install(tmp, result.sha256)
        return result

    def put_bytes(self, data: bytes) -> str:
        import hashlib

        hexd = hashlib.sha256(data).hexdigest()
        if not self.has(hexd):
            with self._temp() as (fd, tmp):
                _FullWriter(fd).write(data)
                os.fsync(fd)
                self._install(tmp, hexd)
        return "sha256:" + hexd

    def partial_path(self, digest: str) -> Path:
        """Where a resumable download of `digest` keeps its bytes (append to it, then commit)."""
        return self.root / "partial" / (strip_sha256(digest) + PARTIAL_SUFFIX)

    def commit_partial(self, digest: str, hashed_as: str | None = None) -> Path:
        """Verify a finished partial download and move it into the store; VerificationError (and
        the partial file is removed, since resuming it could never succeed) when the bytes differ.

        `hashed_as` is the sha256 the downloader computed while writing the file; it spares a
        second read of the whole blob (the downloader hashes what it wrote, not what it was told)."""
        hexd = strip_sha256(digest)
        part = self.partial_path(hexd)
        if not part.is_file():
            raise RegistryError(f"no partial download for {digest} at {part}")
        actual = strip_sha256(hashed_as) if hashed_as is not None else sha256_file(part)
        if actual != hexd:
            part.unlink(missing_ok=True)
            raise VerificationError(f"downloaded blob {digest} hashes to sha256:{actual}; discarded it")
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        self._install(part, hexd)
        part.unlink(missing_ok=True)
        return self.path(hexd)

    def copy_out(self, digest: str, dest: Path) -> None:
        """Copy a blob to `dest` (writable, unlike the store's read-only blob)."""
        src = self.path(digest)
        if not src.is_file():
            raise RegistryError(f"blob {digest} is not in the store at {self.root}")
        shutil.copyfile(src, dest)


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
