"""What the plan engine needs from its node, as small interfaces, and its configuration.

    Transport.broadcast(kind, bundle)  — flood a signed statement to peers
    Transport.prove(address, key_id)   — does the node at `address` hold `key_id`'s private key?
    Resolver.input_info(model_id)      — policy, license, publisher of an input (signed manifest)
    Jobs.execute / verify / bid        — the work a node does for a plan

`node.plans.transport` and `node.jobs.node_jobs` implement them for a real node; tests join
engines with an in-process transport.
"""

from __future__ import annotations

import time
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
# A committed executor signs a heartbeat (with its progress) every HEARTBEAT_S; one silent for
# HEARTBEAT_TIMEOUT_S, or past the plan's deadline, is replaced by a commit of the next round.
HEARTBEAT_S = 2.0
HEARTBEAT_TIMEOUT_S = 30.0
# Another node accepts a replacement commit once its own view of the executor is silent for
# this share of the timeout (clocks and gossip delays differ between nodes).
REPLACEMENT_SLACK = 0.5


class Transport(Protocol):
    def broadcast(self, kind: str, bundle: Mapping[str, Any], exclude: str | None = None) -> None: ...

    def prove(self, address: str, key_id: str) -> bool: ...


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
    heartbeat_s: float = HEARTBEAT_S
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    clock: Callable[[], float] = time.time  # tests share a fake one between engines

    def __post_init__(self) -> None:
        if self.consent_policy not in CONSENT_POLICIES:
            raise PlanInputError(f"consent policy {self.consent_policy!r} is not one of {', '.join(CONSENT_POLICIES)}")
