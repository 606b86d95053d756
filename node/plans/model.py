"""The objects of a merge plan: Plan, Consent, Bid, Commit, Heartbeat, Result, Attestation.

Each is a frozen dataclass with `to_dict()` / `from_dict()`; `from_dict` is the edge where data
from peers is validated (it raises `PlanInputError` naming the field). A plan's id is the
sha256 of its canonical JSON (sorted keys, no insignificant whitespace), so every node derives
the same id from the same plan:

    plan = Plan.new(proposer=key_id, proposer_address="127.0.0.1:7470", inputs=..., recipe=...)
    plan.plan_id   # "sha256:<64 hex>"
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from node.plans.errors import PlanInputError
from registry.errors import BadIdError
from registry.ids import ModelId

ROLES = ("base", "expert", "target")
MERGE, FUSION = "merge", "fusion"
KINDS = (MERGE, FUSION)
DEFAULT_VERIFIERS = 2
DEFAULT_SPOT_CHECK = 0.1
# Absolute tolerance on top of one rounding step of the output dtype: a CPU verifier recomputing
# a GPU executor's float32 result differs only by accumulation order, far below this.
DEFAULT_TOLERANCE = 1e-4
DEFAULT_TTL_S = 3600
# A plan lives at most a week: state for it is kept on every node that saw it.
MAX_TTL_S = 7 * 86400
# A plan is verified by at least one node other than its executor.
MIN_VERIFIERS = 1
MAX_VERIFIERS = 16
# Bounds on what one plan may name, so a hostile plan cannot make every node hold a large one.
MAX_INPUTS = 64
MAX_VERIFIER_KEYS = 256
MAX_DEADLINE_S = 7 * 86400
MAX_COMMIT_BIDS = 64  # the bids a commit carries (one per key; the first ones the proposer got)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes that ids and digests cover."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _req(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, Mapping) or key not in data:
        raise PlanInputError(f"{where}: missing field {key!r}")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise PlanInputError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _check_id(value: str, where: str) -> ModelId:
    try:
        return ModelId.parse(value)
    except BadIdError:
        raise PlanInputError(f"{where}: {value!r} is not an id of the form sha256:<64 hex digits>") from None


def beacon_for(secret: str) -> str:
    """What a plan publishes of the proposer's secret (hex): its sha256, revealed in the commit."""
    return hashlib.sha256(bytes.fromhex(secret)).hexdigest()


def _keys(value: Any) -> tuple[str, ...]:
    """A consent entry: a non-empty list of key ids (a single string is one key), sorted."""
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, list | tuple) or not keys or not all(isinstance(k, str) and k for k in keys) \
            or len(keys) > MAX_VERIFIER_KEYS:
        raise PlanInputError("plan: each consents_needed entry must list the key ids whose consent it needs")
    return tuple(sorted(set(keys)))


def kind_of(recipe: Mapping[str, Any]) -> str:
    """The one place a recipe's shape decides the plan kind: a fusion recipe names a `target` and
    `sources` (its data travels inline); a weight-merge recipe never does."""
    return FUSION if isinstance(recipe, Mapping) and "target" in recipe and "sources" in recipe else MERGE


@dataclass(frozen=True)
class PlanInput:
    """One model the plan reads, by id, and what it is for (`base`, `expert` or `target`)."""

    model_id: str
    role: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanInput:
        role = _req(data, "role", str, "plan input")
        if role not in ROLES:
            raise PlanInputError(f"plan input: role {role!r} is not one of {', '.join(ROLES)}")
        return cls(_check_id(_req(data, "model_id", str, "plan input"), "plan input model_id"), role)


@dataclass(frozen=True)
class Requirements:
    """What the executor must have: free memory in bytes and, optionally, a GPU."""

    memory_bytes: int = 0
    gpu: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Requirements:
        mem = _req(data, "memory_bytes", int, "plan requirements")
        if mem < 0:
            raise PlanInputError("plan requirements: memory_bytes must not be negative")
        return cls(mem, _req(data, "gpu", bool, "plan requirements"))


@dataclass(frozen=True)
class VerificationPolicy:
    """How many verifiers must attest, which share of tensors each recomputes, and how close."""

    verifiers: int = DEFAULT_VERIFIERS
    spot_check: float = DEFAULT_SPOT_CHECK
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not MIN_VERIFIERS <= self.verifiers <= MAX_VERIFIERS:
            raise PlanInputError(f"verification: verifiers must be {MIN_VERIFIERS} to {MAX_VERIFIERS} (a plan is "
                                 f"checked by at least one other node), got {self.verifiers}")
        if not 0.0 < self.spot_check <= 1.0:
            raise PlanInputError(f"verification: spot_check must be in (0, 1], got {self.spot_check}")
        if self.tolerance < 0:
            raise PlanInputError(f"verification: tolerance must not be negative, got {self.tolerance}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationPolicy:
        w = "plan verification"
        return cls(_req(data, "verifiers", int, w), _req(data, "spot_check", float, w),
                   _req(data, "tolerance", float, w))


@dataclass(frozen=True)
class Plan:
    """A proposal to merge `inputs` with `recipe` (mergekit-style dict whose models are ids)."""

    proposer: str
    proposer_address: str
    inputs: tuple[PlanInput, ...]
    recipe: Mapping[str, Any] = field(hash=False)
    license: str
    # model id → the key ids whose consent it needs: its publisher, or for a model merged from
    # `consent` models the original publishers its signed provenance names
    consents_needed: Mapping[str, tuple[str, ...]] = field(hash=False)
    requirements: Requirements
    verification: VerificationPolicy
    created: int
    expires: int
    nonce: str
    kind: str = MERGE
    # sha256 hex of a secret the proposer reveals in its commit: bidders cannot know it when they
    # bid, and the proposer fixed it before any bid existed, so neither picks who ranks first
    beacon: str = ""
    deadline_s: int = 0  # execution must report within this long after a commit, or the plan is re-bid
    verifier_keys: tuple[str, ...] = ()  # when set, only these keys may verify

    def __post_init__(self) -> None:
        if not 0 < self.expires - self.created <= MAX_TTL_S:
            raise PlanInputError(f"plan: its lifetime must be between 1 s and {MAX_TTL_S} s "
                                 f"(got {self.expires - self.created} s)")
        if not self.inputs or len(self.inputs) > MAX_INPUTS:
            raise PlanInputError(f"plan: inputs must name 1 to {MAX_INPUTS} models")
        if not 0 < self.deadline_s <= MAX_DEADLINE_S:
            raise PlanInputError(f"plan: deadline_s must be between 1 and {MAX_DEADLINE_S}, got {self.deadline_s}")
        if len(self.beacon) != 64 or any(c not in "0123456789abcdef" for c in self.beacon):
            raise PlanInputError("plan: beacon must be 64 lower-case hex digits (sha256 of the proposer's secret)")
        if len(self.verifier_keys) > MAX_VERIFIER_KEYS:
            raise PlanInputError(f"plan: at most {MAX_VERIFIER_KEYS} verifier keys")
        if self.verifier_keys and len(self.verifier_keys) < self.verification.verifiers:
            raise PlanInputError("plan: fewer accepted verifier keys than verifiers needed")
        if self.kind not in KINDS:
            raise PlanInputError(f"plan: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if kind_of(self.recipe) != self.kind:
            raise PlanInputError(f"plan: kind {self.kind!r} does not match its recipe "
                                 f"(a {kind_of(self.recipe)} recipe)")

    @property
    def is_fusion(self) -> bool:
        return self.kind == FUSION

    @classmethod
    def new(cls, *, proposer: str, proposer_address: str, inputs: list[PlanInput], recipe: Mapping[str, Any],
            license: str, consents_needed: Mapping[str, Any] | None = None,
            requirements: Requirements = Requirements(),
            verification: VerificationPolicy = VerificationPolicy(), ttl_s: int = DEFAULT_TTL_S,
            now: float | None = None, beacon: str | None = None, deadline_s: int = 3600,
            verifier_keys: tuple[str, ...] = ()) -> Plan:
        """A new plan. `beacon`: sha256 hex of the proposer's secret (`beacon_for(secret)`); a
        random one when the caller will never commit (tests, plans signed by a stranger)."""
        created = int(time.time() if now is None else now)
        needed = {mid: _keys(v) for mid, v in (consents_needed or {}).items()}
        return cls(proposer, proposer_address, tuple(inputs), dict(recipe), license, needed,
                   requirements, verification, created, created + int(ttl_s), secrets.token_hex(8), kind_of(recipe),
                   beacon or beacon_for(secrets.token_hex(32)), int(deadline_s), tuple(sorted(set(verifier_keys))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposer": self.proposer, "proposer_address": self.proposer_address,
            "inputs": [asdict(i) for i in self.inputs], "recipe": dict(self.recipe), "license": self.license,
            "consents_needed": {k: list(v) for k, v in self.consents_needed.items()},
            "requirements": asdict(self.requirements),
            "verification": asdict(self.verification),
            "created": self.created, "expires": self.expires, "nonce": self.nonce, "kind": self.kind,
            "beacon": self.beacon, "deadline_s": self.deadline_s, "verifier_keys": list(self.verifier_keys),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        w = "plan"
        inputs = _req(data, "inputs", list, w)
        if not inputs:
            raise PlanInputError("plan: inputs must name at least one model")
        return cls(
            proposer=_req(data, "proposer", str, w), proposer_address=_req(data, "proposer_address", str, w),
            inputs=tuple(PlanInput.from_dict(i) for i in inputs), recipe=dict(_req(data, "recipe", dict, w)),
            license=_req(data, "license", str, w),
            consents_needed={_check_id(str(k), w): _keys(v) for k, v in _req(data, "consents_needed", dict, w).items()},
            requirements=Requirements.from_dict(_req(data, "requirements", dict, w)),
            verification=VerificationPolicy.from_dict(_req(data, "verification", dict, w)),
            created=_req(data, "created", int, w), expires=_req(data, "expires", int, w),
            nonce=_req(data, "nonce", str, w), kind=_req(data, "kind", str, w),
            beacon=_req(data, "beacon", str, w), deadline_s=_req(data, "deadline_s", int, w),
            verifier_keys=tuple(str(k) for k in _req(data, "verifier_keys", list, w)),
        )

    def canonical(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def digest_hex(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @property
    def plan_id(self) -> str:
        return "sha256:" + self.digest_hex

    def model_ids(self) -> list[str]:
        return [i.model_id for i in self.inputs]


@dataclass(frozen=True)
class Consent:
    """A publisher's accept or reject of a plan that reads one of its models."""

    plan_id: str
    model_id: str
    accept: bool
    reason: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Consent:
        w = "consent"
        return cls(_check_id(_req(data, "plan_id", str, w), w), _check_id(_req(data, "model_id", str, w), w),
                   _req(data, "accept", bool, w), str(data.get("reason", "")))


@dataclass(frozen=True)
class Bid:
    """A node's offer to execute a plan, with the capacity it claims."""

    plan_id: str
    address: str
    memory_bytes: int
    gpu: bool
    score: float
    device: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bid:
        w = "bid"
        return cls(_check_id(_req(data, "plan_id", str, w), w), _req(data, "address", str, w),
                   _req(data, "memory_bytes", int, w), _req(data, "gpu", bool, w), _req(data, "score", float, w),
                   _req(data, "device", str, w))


@dataclass(frozen=True)
class Member:
    """A node named in a commit: its key id and gRPC address."""

    key_id: str
    address: str


@dataclass(frozen=True)
class Commit:
    """The proposer's binding choice of executor and verifiers. A later `round` replaces an
    executor that stopped answering before it reported a result."""

    plan_id: str
    executor: Member
    verifiers: tuple[Member, ...]
    round: int = 0
    # The signed bids the choice was made from, and the secret whose sha256 is the plan's
    # beacon: every node re-derives the choice from these (node.plans.rules.check_commit).
    bids: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    reveal: str = ""
    excluded: tuple[str, ...] = ()  # executors of earlier rounds, which missed their deadline

    def to_dict(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "executor": asdict(self.executor),
                "verifiers": [asdict(v) for v in self.verifiers], "round": self.round,
                "bids": [dict(b) for b in self.bids], "reveal": self.reveal, "excluded": list(self.excluded)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Commit:
        w = "commit"

        def member(d: Any) -> Member:
            return Member(_req(d, "key_id", str, w), _req(d, "address", str, w))

        rnd = _req(data, "round", int, w)
        if rnd < 0:
            raise PlanInputError("commit: round must not be negative")
        bids = _req(data, "bids", list, w)
        if len(bids) > MAX_COMMIT_BIDS or not all(isinstance(b, dict) for b in bids):
            raise PlanInputError(f"commit: bids must be at most {MAX_COMMIT_BIDS} signed bid bundles")
        verifiers = _req(data, "verifiers", list, w)
        if len(verifiers) > MAX_VERIFIERS:
            raise PlanInputError(f"commit: at most {MAX_VERIFIERS} verifiers")
        return cls(_check_id(_req(data, "plan_id", str, w), w), member(_req(data, "executor", dict, w)),
                   tuple(member(v) for v in verifiers), rnd, tuple(bids), _req(data, "reveal", str, w),
                   tuple(str(k) for k in _req(data, "excluded", list, w)))


@dataclass(frozen=True)
class Heartbeat:
    """The committed executor's signed sign of life while it works: which round, how far."""

    plan_id: str
    round: int
    done: int
    total: int
    at: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Heartbeat:
        w = "heartbeat"
        return cls(_check_id(_req(data, "plan_id", str, w), w), _req(data, "round", int, w),
                   _req(data, "done", int, w), _req(data, "total", int, w), _req(data, "at", float, w))


@dataclass(frozen=True)
class Result:
    """The executor's statement that it merged the plan into the signed model `model_id`, or
    (with `error` set and no model) that it could not."""

    plan_id: str
    model_id: str
    address: str
    device: str
    seconds: float
    error: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        w = "result"
        error = str(data.get("error", ""))
        model_id = _req(data, "model_id", str, w)
        if not error:
            _check_id(model_id, w)
        return cls(_check_id(_req(data, "plan_id", str, w), w), model_id, _req(data, "address", str, w),
                   _req(data, "device", str, w), _req(data, "seconds", float, w), error)


@dataclass(frozen=True)
class Attestation:
    """A verifier's statement: these tensors of `model_id` recomputed from the plan match (or not);
    for a fusion plan, no tensors but the `scores` it measured (name → value, e.g. held-out loss)."""

    plan_id: str
    model_id: str
    tensors: tuple[str, ...]
    max_abs_diff: float
    passed: bool
    detail: str = ""
    scores: Mapping[str, float] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"plan_id": self.plan_id, "model_id": self.model_id, "tensors": list(self.tensors),
               "max_abs_diff": self.max_abs_diff, "passed": self.passed, "detail": self.detail}
        if self.scores:  # absent when empty, so weight-merge attestations keep their exact form
            out["scores"] = dict(self.scores)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attestation:
        w = "attestation"
        raw = _req(data, "scores", dict, w) if "scores" in data else {}
        scores = {str(k): _req(raw, k, float, "attestation scores") for k in raw}
        return cls(_check_id(_req(data, "plan_id", str, w), w), _check_id(_req(data, "model_id", str, w), w),
                   tuple(str(t) for t in _req(data, "tensors", list, w)), _req(data, "max_abs_diff", float, w),
                   _req(data, "passed", bool, w), str(data.get("detail", "")), scores)


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON form of any plan object (the predicate of its signed statement)."""
    return obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
