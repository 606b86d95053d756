"""The node's job runner: a small pool of daemon worker threads fed from a queue.

    runner = JobRunner(workers=1)
    runner.submit(lambda: merge_something())
    runner.busy  # jobs queued or running (lowers this node's bid score)

Workers are daemon threads on purpose: a node that is told to stop must not wait for a merge to
finish; an interrupted job is picked up again by `PlanEngine.resume()` after a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# Merges are memory- and core-hungry; one at a time per node unless configured otherwise.
DEFAULT_WORKERS = 1


class JobRunner:
    def __init__(self, workers: int = DEFAULT_WORKERS, name: str = "job") -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._lock = threading.Lock()
        self._busy = 0
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._busy += 1
        self._queue.put(fn)

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            try:
                fn()
            except Exception:  # a failed job must not kill the worker
                log.exception("job failed")
            finally:
                with self._lock:
                    self._busy -= 1
