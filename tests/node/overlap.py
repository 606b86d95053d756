"""Counting calls that run at once, to check that work meant to be concurrent is.

    overlap = Overlap(hold_s=0.2)
    slow = overlap.wrap(fn)       # each call waits hold_s (a silent address, shortened), then runs fn
    ...                           # run the code under test with `slow` in place of fn
    overlap.most                  # the most calls that were in flight together
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Overlap:
    def __init__(self, hold_s: float = 0.2) -> None:
        self.hold_s = hold_s
        self.most = 0
        self._now = 0
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def slow(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._now += 1
                self.most = max(self.most, self._now)
            time.sleep(self.hold_s)
            with self._lock:
                self._now -= 1
            return fn(*args, **kwargs)
        return slow
