"""Claims that a peer left, honoured only when the peer itself confirms them by no longer answering.

    checks = LeaveChecks(on_gone=network.forget)
    checks.claim("127.0.0.1:7471")   # from an Announce with leaving=True, whoever sent it

A goodbye (`AnnounceRequest.leaving`) names its sender, and anyone can name anyone. Instead of
believing it, the node asks the named address itself a little later: only when nothing listens
there any more (UNAVAILABLE) is the peer forgotten. An honest node says goodbye just before it
stops serving, so the first check comes LEAVE_CHECK_DELAYS_S[0] after the claim and a later one
catches a node that took longer to stop; a forged goodbye for a live peer finds it answering and
changes nothing. Checks are bounded (MAX_PENDING_CHECKS, one per address at a time), and each
runs on a short-lived timer thread that ends by itself after its last probe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import grpc

from node.network.client import connect, registry_stub
from protos import mergenet_pb2 as pb

log = logging.getLogger(__name__)

# When to look, after a goodbye: a stopping node sends its goodbyes (1 s each at most, see
# node.network.view.GOODBYE_TIMEOUT_S), then stops serving within its grace period.
LEAVE_CHECK_DELAYS_S = (3.0, 12.0)
LEAVE_PROBE_TIMEOUT_S = 2.0
# Addresses being checked at once; further claims are dropped until one finishes.
MAX_PENDING_CHECKS = 64


def answers(addr: str, timeout_s: float = LEAVE_PROBE_TIMEOUT_S) -> bool:
    """False only when nothing serves at `addr` (UNAVAILABLE); a slow or refusing node still answers."""
    with connect(addr) as ch:
        try:
            registry_stub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code() != grpc.StatusCode.UNAVAILABLE
    return True


class LeaveChecks:
    """:param on_gone: called with the address once a claim is confirmed
    :param delays_s: when to probe after the claim (seconds, increasing)
    """

    def __init__(self, on_gone: Callable[[str], None], delays_s: Sequence[float] = LEAVE_CHECK_DELAYS_S) -> None:
        self._on_gone = on_gone
        self._delays = tuple(delays_s)
        self._lock = threading.Lock()
        self._pending: set[str] = set()

    def pending(self) -> set[str]:
        with self._lock:
            return set(self._pending)

    def claim(self, addr: str) -> None:
        with self._lock:
            if not addr or addr in self._pending or len(self._pending) >= MAX_PENDING_CHECKS:
                return
            self._pending.add(addr)
        self._schedule(addr, 0, 0.0)

    def _schedule(self, addr: str, step: int, waited: float) -> None:
        timer = threading.Timer(self._delays[step] - waited, self._check, args=(addr, step))
        timer.name, timer.daemon = f"leave-check {addr}", True
        timer.start()

    def _check(self, addr: str, step: int) -> None:
        if not answers(addr):
            self._finish(addr)
            log.info("peer %s said it is leaving and no longer answers: forgetting it", addr)
            self._on_gone(addr)
        elif step + 1 < len(self._delays):
            self._schedule(addr, step + 1, self._delays[step])
        else:
            self._finish(addr)
            log.info("ignored a goodbye for %s: it still answers", addr)

    def _finish(self, addr: str) -> None:
        with self._lock:
            self._pending.discard(addr)
