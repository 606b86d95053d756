"""Early writeback: start writing a file's received bytes to disk while more are still arriving.

    flusher = Writeback(out, start=offset)    # `out`: the file being appended to
    flusher.wrote(n)                          # after each write; every WRITEBACK_BYTES it starts writeback

A blob enters the store only after an fsync (registry.store.commit_partial), so that a crash never
leaves a blob named by its digest with other bytes on disk. Left to the kernel, a whole blob is
still dirty in the page cache when the stream ends and that fsync waits for all of it: on this
project's disk (~0.9 GB/s) about as long as streaming it took. Asking the kernel to write each
range out as soon as it is complete (Linux sync_file_range(SYNC_FILE_RANGE_WRITE), which does not
wait) overlaps the disk with the network, and the fsync finds little left to do. The fsync stays:
this only moves work earlier. Where the call does not exist (not Linux), nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
from typing import BinaryIO

log = logging.getLogger(__name__)

# Bytes written between two writeback requests: large enough that the requests cost nothing,
# small enough that little is left dirty when the stream ends.
WRITEBACK_BYTES = 8 << 20
SYNC_FILE_RANGE_WRITE = 2  # from <linux/fs.h>: start writeback of dirty pages, do not wait


def _sync_file_range() -> ctypes._CFuncPtr | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: the commit's fsync does all the work
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()


class Writeback:
    """Starts writeback of `out` every WRITEBACK_BYTES appended to it (from offset `start`)."""

    def __init__(self, out: BinaryIO, start: int = 0, every: int = WRITEBACK_BYTES) -> None:
        self.out = out
        self.every = every
        self._flushed = start  # bytes before this offset were already handed to the kernel
        self._end = start

    def wrote(self, n: int) -> None:
        self._end += n
        if _SYNC_FILE_RANGE is None or self._end - self._flushed < self.every:
            return
        self.out.flush()  # what a buffered file still holds is not the kernel's to write yet
        if _SYNC_FILE_RANGE(self.out.fileno(), self._flushed, self._end - self._flushed, SYNC_FILE_RANGE_WRITE) != 0:
            log.debug("sync_file_range failed (errno %d); the commit's fsync will write the blob", ctypes.get_errno())
        self._flushed = self._end
