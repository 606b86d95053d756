"""Bounded shutdown: SIGINT/SIGTERM ask the node to stop; a second signal, or a stop that takes
longer than the deadline, ends the process hard after killing every process it started.

    watchdog = StopWatchdog(on_first=node_stop_event.set, deadline_s=STOP_DEADLINE_S)
    watchdog.install()          # in the main thread; the node's stop() then runs as usual

A clean stop (announce leaving, stop gRPC, reap the DHT) is the normal path; this exists so a
wedged child or a blocked call can never make a node ignore signals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# A clean stop waits at most a few seconds on each of: loops, DHT leave, peers, gRPC, DHT child.
STOP_DEADLINE_S = 30.0
HARD_EXIT_CODE = 1


def kill_children() -> None:
    """Kill every process this one started, grandchildren included (the DHT child, p2pd)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


def hard_exit(reason: str) -> None:
    log.error("%s; killing child processes and exiting", reason)
    for handler in logging.getLogger().handlers:  # the last line should reach the log file
        with contextlib.suppress(Exception):
            handler.flush()
    kill_children()
    os._exit(HARD_EXIT_CODE)


class StopWatchdog:
    """:param on_first: called on the first signal (ask the node to stop)
    :param deadline_s: after the first signal, exit hard if the process is still alive by then
    """

    def __init__(self, on_first: Callable[[], None], deadline_s: float = STOP_DEADLINE_S) -> None:
        self.on_first = on_first
        self.deadline_s = deadline_s
        self._signalled = threading.Event()

    def install(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self._signalled.is_set():
            hard_exit(f"second {signal.Signals(signum).name} while stopping")
        self._signalled.set()
        log.info("%s received; stopping (again to force)", signal.Signals(signum).name)
        timer = threading.Timer(self.deadline_s, hard_exit, args=(f"stop took longer than {self.deadline_s:g}s",))
        timer.daemon = True
        timer.start()
        self.on_first()
