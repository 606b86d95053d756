"""What the plan engine needs from its node, as small interfaces, and its configuration.

    Transport.broadcast(kind, bundle)  — flood a signed statement to peers
    Resolver.input_info(model_id)      — policy, license, publisher of an input (signed manifest)
    Jobs.execute / verify / bid        — the work a node does for a plan

`node.plans.transport` and `node.jobs.node_jobs` implement them for a real node; tests join
engines with an in-process transport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from node.plans import rules
from node.plans.errors import PlanInputError
from node.plans.model import Attestation, Bid, Plan, Result
from node.plans.state import PlanRecord

CONSENT_POLICIES = ("accept", "reject", "manual")
# The proposer waits this long for bids before committing, so that more than the first node to
# answer is considered; and gives up when too few nodes bid for this long.
BID_WINDOW_S = 1.5
BID_DEADLINE_S = 60.0
# A committed executor that has not reported gets this long before the proposer checks on it,
# then is asked whether it is alive every EXECUTOR_CHECK_S; a dead one is replaced.
EXECUTOR_GRACE_S = 10.0
EXECUTOR_CHECK_S = 5.0
EXECUTOR_MISSES = 2  # consecutive failed checks: one slow answer on a busy machine is not death


class Transport(Protocol):
    def broadcast(self, kind: str, bundle: Mapping[str, Any], exclude: str | None = None) -> None: ...

    def alive(self, address: str) -> bool: ...


class Resolver(Protocol):
    def input_info(self, model_id: str) -> rules.InputInfo: ...

    def local_info(self, model_id: str) -> rules.InputInfo | None: ...


class Jobs(Protocol):
    def bid(self, plan: Plan, address: str) -> Bid | None: ...

    def execute(self, record: PlanRecord, progress: Callable[[int, int], None]) -> Result: ...

    def verify(self, record: PlanRecord) -> Attestation: ...

    def submit(self, fn: Callable[[], None]) -> None: ...

    def attestation_received(self, model_id: str, bundle: Mapping[str, Any]) -> None: ...

    def consent_received(self, plan_id: str, model_id: str, bundle: Mapping[str, Any], signer: str) -> None: ...


@dataclass(frozen=True)
class EngineConfig:
    """:param address: this node's gRPC address, put into plans and bids
    :param consent_policy: how this node answers plans that read its `consent` models"""

    address: str
    consent_policy: str = "accept"
    bid_window_s: float = BID_WINDOW_S
    bid_deadline_s: float = BID_DEADLINE_S
    executor_grace_s: float = EXECUTOR_GRACE_S
    executor_check_s: float = EXECUTOR_CHECK_S
    executor_misses: int = EXECUTOR_MISSES

    def __post_init__(self) -> None:
        if self.consent_policy not in CONSENT_POLICIES:
            raise PlanInputError(f"consent policy {self.consent_policy!r} is not one of {', '.join(CONSENT_POLICIES)}")


class ExecutorWatch:
    """The proposer's view of whether a committed executor is still alive: checked after a
    grace period, at most every `executor_check_s`, dead after `executor_misses` failed checks
    in a row (one slow answer on a busy machine is not death)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._checked: dict[str, float] = {}  # plan id → last check
        self._misses: dict[str, int] = {}  # "plan id#round" → failed checks in a row

    def dead(self, record: PlanRecord, now: float, alive: Callable[[str], bool]) -> bool:
        commit = record.commit.body  # type: ignore[union-attr]
        cfg = self.config
        if now - record.committed_at < cfg.executor_grace_s or \
                now - self._checked.get(record.plan_id, 0.0) < cfg.executor_check_s:
            return False
        self._checked[record.plan_id] = now
        key = f"{record.plan_id}#{commit.round}"
        if alive(commit.executor.address):
            self._misses.pop(key, None)
            return False
        self._misses[key] = self._misses.get(key, 0) + 1
        return self._misses[key] >= cfg.executor_misses
