"""Statements that arrived before what they build on (gossip may reorder: a result before its
commit), held per plan until the plan moves on, then replayed; bounded and expiring, since a
stranger can send statements for plans that will never exist.

    pending = PendingStatements()
    pending.park(plan_id, "result", signed, now)      # False when the buffer is full
    for kind, signed in pending.take(plan_id): ...     # the plan moved on: replay them
    pending.expire(now)
"""

from __future__ import annotations

import threading
from typing import Any

# Parked statements wait this long, at most this many per plan and in all; they are never
# forwarded until their plan is known.
PENDING_TTL_S = 120.0
MAX_PENDING_PER_PLAN = 64
MAX_PENDING = 1024


class PendingStatements:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_plan: dict[str, list[tuple[float, str, Any]]] = {}
        self._count = 0

    def park(self, plan_id: str, kind: str, signed: Any, now: float) -> bool:
        with self._lock:
            parked = self._by_plan.setdefault(plan_id, [])
            if len(parked) >= MAX_PENDING_PER_PLAN or self._count >= MAX_PENDING:
                if not parked:
                    del self._by_plan[plan_id]
                return False
            parked.append((now, kind, signed))
            self._count += 1
            return True

    def take(self, plan_id: str) -> list[tuple[str, Any]]:
        with self._lock:
            parked = self._by_plan.pop(plan_id, [])
            self._count -= len(parked)
        return [(kind, signed) for _, kind, signed in parked]

    def expire(self, now: float) -> None:
        with self._lock:
            for plan_id in list(self._by_plan):
                kept = [p for p in self._by_plan[plan_id] if now - p[0] < PENDING_TTL_S]
                self._count -= len(self._by_plan[plan_id]) - len(kept)
                if kept:
                    self._by_plan[plan_id] = kept
                else:
                    del self._by_plan[plan_id]

    def __len__(self) -> int:
        with self._lock:
            return self._count
