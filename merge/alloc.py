"""Heap reuse for the executor's large temporaries (glibc only; a no-op elsewhere).

    with heap_reuse():
        ...  # merge loop

glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so each
float32 temporary of a large embedding (~130 MB) costs tens of thousands of page faults, which
measured 3–4× the arithmetic itself. Inside `heap_reuse` large blocks come from the heap and
freed ones stay there for the next tensor; on exit the old settings are restored and the
unused heap is handed back with malloc_trim, so a long-running node does not keep it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
_lock = threading.Lock()
_depth = 0


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def heap_reuse() -> Iterator[None]:
    """Keep freed large blocks in the heap while the block runs (re-entrant, thread-safe)."""
    global _depth
    libc = _libc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
