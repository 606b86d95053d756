"""A plan's life on one node: the state machine and its persistence under the home.

    proposed → consenting → bidding → committed → executing → verifying → published
                         ↘ rejected        ↘ expired         ↘ failed

States only move forward (a node may skip states it did not witness, e.g. a verifier learns
of the result before it saw `executing`); `published`, `failed`, `rejected` and `expired` are
final. Every change is written to `<home>/plans/<hex>.json` (temp file + fsync + rename), so a
restarted node remembers its plans.

    store = PlanStore(home / "plans")
    store.add(PlanRecord.new(plan, bundle, signer))
    store.update(plan_id, lambda r: advance(r, BIDDING, "no consent needed"))
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from node.plans.errors import PlanError, UnknownPlanError
from node.plans.model import Attestation, Bid, Commit, Consent, Heartbeat, Plan, Result

log = logging.getLogger(__name__)

PROPOSED, CONSENTING, BIDDING, COMMITTED = "proposed", "consenting", "bidding", "committed"
EXECUTING, VERIFYING, PUBLISHED = "executing", "verifying", "published"
FAILED, REJECTED, EXPIRED = "failed", "rejected", "expired"
ORDER = (PROPOSED, CONSENTING, BIDDING, COMMITTED, EXECUTING, VERIFYING, PUBLISHED)
FINAL = frozenset({PUBLISHED, FAILED, REJECTED, EXPIRED})
STATES = (*ORDER, FAILED, REJECTED, EXPIRED)

_BODY_TYPES: dict[str, Any] = {"consent": Consent, "bid": Bid, "commit": Commit, "result": Result,
                               "attestation": Attestation, "heartbeat": Heartbeat}
# Finished plans are kept this long (for `plan status`), then forgotten; the model they produced
# stays in the registry with its attestations.
RETAIN_FINAL_S = 86400.0
MAX_PLANS = 10_000  # records one node keeps at most; new plans beyond it are refused


class TransitionError(PlanError):
    """A state change the machine does not allow (backwards, or out of a final state)."""


@dataclass(frozen=True)
class Signed:
    """A statement body together with its verified signer and the signed bundle it came in."""

    signer: str
    body: Any
    bundle: Mapping[str, Any] = field(hash=False)

    def to_json(self) -> dict[str, Any]:
        body = self.body.to_dict() if hasattr(self.body, "to_dict") else asdict(self.body)
        return {"signer": self.signer, "body": body, "bundle": dict(self.bundle)}

    @classmethod
    def from_json(cls, kind: str, data: Mapping[str, Any]) -> Signed:
        return cls(data["signer"], _BODY_TYPES[kind].from_dict(data["body"]), data["bundle"])


@dataclass(frozen=True)
class PlanRecord:
    """Everything this node knows about one plan; replaced (never mutated) on every change."""

    plan: Plan
    plan_bundle: Mapping[str, Any] = field(hash=False)
    state: str = PROPOSED
    reason: str = ""
    history: tuple[tuple[str, float, str], ...] = ()
    needed_consents: tuple[str, ...] = ()
    consents: Mapping[str, Signed] = field(default_factory=dict, hash=False)  # "model id|key" → consent
    bids: Mapping[str, Signed] = field(default_factory=dict, hash=False)
    commit: Signed | None = None
    committed_at: float = 0.0
    replaced: tuple[str, ...] = ()  # executors that stopped answering and were replaced
    result: Signed | None = None
    attestations: Mapping[str, Signed] = field(default_factory=dict, hash=False)
    progress: tuple[int, int] = (0, 0)
    heartbeat_at: float = 0.0  # when this node last heard the committed executor's heartbeat
    secret: str = ""  # the proposer's own record only: the secret behind the plan's beacon
    # the proposer's own record only: bidders whose address failed the key challenge; their
    # bids stay (so the key cannot bid again) but are never chosen nor carried in a commit
    unproven: tuple[str, ...] = ()

    @classmethod
    def new(cls, plan: Plan, plan_bundle: Mapping[str, Any], now: float | None = None) -> PlanRecord:
        now = time.time() if now is None else now
        return cls(plan, dict(plan_bundle), PROPOSED, "", ((PROPOSED, now, ""),))

    @property
    def plan_id(self) -> str:
        return self.plan.plan_id

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def passing(self) -> list[Signed]:
        return [a for a in self.attestations.values() if a.body.passed]

    def to_json(self) -> dict[str, Any]:
        def many(items: Mapping[str, Signed]) -> dict[str, Any]:
            return {k: v.to_json() for k, v in items.items()}

        return {
            "plan_bundle": dict(self.plan_bundle), "plan": self.plan.to_dict(), "state": self.state,
            "reason": self.reason, "history": [list(h) for h in self.history],
            "needed_consents": list(self.needed_consents), "consents": many(self.consents),
            "bids": many(self.bids), "commit": self.commit.to_json() if self.commit else None,
            "committed_at": self.committed_at, "replaced": list(self.replaced),
            "result": self.result.to_json() if self.result else None,
            "attestations": many(self.attestations), "progress": list(self.progress),
            "heartbeat_at": self.heartbeat_at, "secret": self.secret, "unproven": list(self.unproven),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanRecord:
        def many(kind: str, items: Mapping[str, Any]) -> dict[str, Signed]:
            return {k: Signed.from_json(kind, v) for k, v in items.items()}

        return cls(
            plan=Plan.from_dict(data["plan"]), plan_bundle=data["plan_bundle"], state=data["state"],
            reason=data["reason"], history=tuple((h[0], h[1], h[2]) for h in data["history"]),
            needed_consents=tuple(data["needed_consents"]), consents=many("consent", data["consents"]),
            bids=many("bid", data["bids"]),
            commit=Signed.from_json("commit", data["commit"]) if data["commit"] else None,
            committed_at=float(data.get("committed_at", 0.0)), replaced=tuple(data.get("replaced", ())),
            result=Signed.from_json("result", data["result"]) if data["result"] else None,
            attestations=many("attestation", data["attestations"]), progress=tuple(data["progress"]),
            heartbeat_at=float(data.get("heartbeat_at", 0.0)), secret=str(data.get("secret", "")),
            unproven=tuple(data.get("unproven", ())),
        )


def can_advance(current: str, new: str) -> bool:
    if current in FINAL or new == current:
        return False
    if new in FINAL:
        return True
    return ORDER.index(new) > ORDER.index(current)


def advance(record: PlanRecord, new: str, reason: str = "", now: float | None = None) -> PlanRecord:
    """The record in state `new`; raises `TransitionError` when the machine forbids the move."""
    if new not in STATES:
        raise TransitionError(f"plan {record.plan_id}: unknown state {new!r}")
    if not can_advance(record.state, new):
        raise TransitionError(f"plan {record.plan_id}: cannot go from {record.state} to {new}")
    now = time.time() if now is None else now
    # One log line per move, so an operator can follow (and grep) every plan a node takes part in.
    level = logging.WARNING if new in (FAILED, REJECTED) else logging.INFO
    log.log(level, "plan %s: %s → %s%s", record.plan_id, record.state, new, f" ({reason})" if reason else "",
            extra={"plan_id": record.plan_id})
    return replace(record, state=new, reason=reason, history=(*record.history, (new, now, reason)))


def try_advance(record: PlanRecord, new: str, reason: str = "", now: float | None = None) -> PlanRecord:
    """`advance` when allowed, else the record unchanged (for events that may arrive late)."""
    return advance(record, new, reason, now) if can_advance(record.state, new) else record


class PlanStore:
    """Thread-safe plan records of one node, persisted one JSON file per plan."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._records: dict[str, PlanRecord] = {}
        for path in sorted(self.root.glob("*.json")):
            try:
                record = PlanRecord.from_json(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError) as exc:  # a damaged file must not stop the node
                log.warning("ignoring unreadable plan file %s: %s", path, exc)
                continue
            self._records[record.plan_id] = record

    def _path(self, plan_id: str) -> Path:
        return self.root / (plan_id.removeprefix("sha256:") + ".json")

    def _write(self, record: PlanRecord) -> None:
        path = self._path(record.plan_id)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(record.to_json(), fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, plan_id: str) -> PlanRecord | None:
        with self._lock:
            return self._records.get(plan_id)

    def resolve(self, prefix: str) -> PlanRecord:
        """A record by full id or unambiguous prefix (with or without `sha256:`)."""
        want = prefix.removeprefix("sha256:")
        with self._lock:
            hits = [r for pid, r in self._records.items() if pid.removeprefix("sha256:").startswith(want)]
        if len(hits) != 1 or not want:
            what = "matches no plan" if not hits else "is ambiguous"
            raise UnknownPlanError(f"plan id {prefix!r} {what} known to this node; see `mergenet plan ls`")
        return hits[0]

    def list(self) -> list[PlanRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: (r.plan.created, r.plan_id))

    def add(self, record: PlanRecord) -> bool:
        """Store a new plan; False (and nothing changes) when the id is already known or the
        store is full (MAX_PLANS: garbage collection makes room as plans finish)."""
        with self._lock:
            if record.plan_id in self._records or len(self._records) >= MAX_PLANS:
                return False
            self._records[record.plan_id] = record
            self._write(record)
            return True

    def active_by(self, proposer: str) -> int:
        """How many unfinished plans `proposer` has here (a cap per key bounds a flood)."""
        with self._lock:
            return sum(1 for r in self._records.values() if r.plan.proposer == proposer and not r.final)

    def collect(self, now: float) -> list[str]:
        """Forget plans finished more than RETAIN_FINAL_S ago (their files too); the ids removed."""
        with self._lock:
            old = [pid for pid, r in self._records.items()
                   if r.final and now - (r.history[-1][1] if r.history else 0.0) > RETAIN_FINAL_S]
            for pid in old:
                del self._records[pid]
                self._path(pid).unlink(missing_ok=True)
        return old

    def update(self, plan_id: str, change: Callable[[PlanRecord], PlanRecord], persist: bool = True) -> PlanRecord:
        """Apply `change` atomically with respect to other updates and persist the result
        (`persist=False` for high-rate changes such as progress; the next change writes them)."""
        with self._lock:
            record = self._records.get(plan_id)
            if record is None:
                raise UnknownPlanError(f"plan {plan_id} is not known to this node")
            new = change(record)
            if new is not record:
                self._records[plan_id] = new
                if persist:
                    self._write(new)
            return new
