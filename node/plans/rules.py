"""Policy logic of plans, pure and deterministic so that every node reaches the same decision.

- merge policy: `open` needs no consent, `consent` needs the publisher's signed accept,
  `closed` forbids derivatives (`PolicyError`, exit 2);
- licenses propagate to the output as an SPDX expression; `output_policy` is the policy it gets;
- expiry;
- executor choice among bids and verifier selection (seeded by the plan id);
- the share of tensor names a verifier recomputes (seeded by randomness the verifier draws).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from node.plans.errors import PolicyError
from node.plans.model import Bid, Commit, Consent, Member, Plan, Requirements

POLICIES = ("open", "consent", "closed")
NO_LICENSE = "NOASSERTION"


@dataclass(frozen=True)
class InputInfo:
    """What a plan needs to know of one input model: from its signed manifest."""

    model_id: str
    policy: str
    license: str
    publisher: str


def check_policies(infos: Iterable[InputInfo]) -> list[str]:
    """The ids of inputs whose publisher must consent; raises `PolicyError` on a `closed` input."""
    needs = []
    for info in infos:
        if info.policy not in POLICIES:
            raise PolicyError(f"model {info.model_id}: unknown merge policy {info.policy!r}; "
                              f"expected one of {', '.join(POLICIES)}")
        if info.policy == "closed":
            raise PolicyError(f"model {info.model_id} has merge policy 'closed': its publisher forbids "
                              f"derivatives; remove it from the recipe")
        if info.policy == "consent":
            needs.append(info.model_id)
    return needs


def consent_answer(plan: Plan, info: InputInfo, node_policy: str) -> Consent | None:
    """What the publisher of input `info` answers to `plan` under its node's consent policy
    (`accept`, `reject` or `manual`: None, the user decides with `plan consent`)."""
    if info.policy == "closed":
        return Consent(plan.plan_id, info.model_id, False, "the model's merge policy is closed")
    if info.policy == "consent" and info.model_id not in plan.consents_needed:
        return Consent(plan.plan_id, info.model_id, False, "the plan omits the consent this model requires")
    if info.model_id not in plan.consents_needed or node_policy == "manual":
        return None
    accept = node_policy == "accept"
    return Consent(plan.plan_id, info.model_id, accept, "" if accept else "this node's consent policy is reject")


@dataclass(frozen=True)
class ConsentTally:
    """Where consent stands: all given, some missing, or refused (with the refusing model)."""

    complete: bool
    missing: tuple[str, ...]
    rejected_by: str | None
    reason: str = ""


def tally_consents(needed: Sequence[str], consents: Mapping[str, Consent]) -> ConsentTally:
    """`consents` maps model id → the (already signature-checked) consent of its publisher."""
    for model_id in needed:
        c = consents.get(model_id)
        if c is not None and not c.accept:
            return ConsentTally(False, (), model_id, c.reason)
    missing = tuple(m for m in needed if m not in consents)
    return ConsentTally(not missing, missing, None)


def _spdx_term(expr: str) -> str:
    # AND binds tighter than OR in SPDX, so a disjunction joined with AND needs parentheses.
    expr = expr.strip()
    if " OR " in expr and not (expr.startswith("(") and expr.endswith(")")):
        return f"({expr})"
    return expr


def propagate_license(licenses: Iterable[str | None]) -> str:
    """The output license of a merge: the common license when all inputs share one, else the
    conjunction of the distinct ones (sorted, so every node writes the same string); inputs
    without a license make the output `NOASSERTION`."""
    seen: list[str] = []
    for lic in licenses:
        lic = (lic or "").strip() or NO_LICENSE
        if lic not in seen:
            seen.append(lic)
    if not seen or NO_LICENSE in seen:
        return NO_LICENSE
    if len(seen) == 1:
        return seen[0]
    return " AND ".join(sorted(_spdx_term(s) for s in seen))


def output_policy(plan: Plan) -> str:
    """The merge policy of a plan's output, as its executor signs it and its verifiers demand.
    `open` for every plan today: consent was the inputs' publishers' to give, and they gave it."""
    return "open"


def is_expired(plan: Plan, now: float) -> bool:
    return now >= plan.expires


def meets(bid: Bid, req: Requirements) -> bool:
    return bid.memory_bytes >= req.memory_bytes and (bid.gpu or not req.gpu)


def choose_executor(bids: Mapping[str, Bid], req: Requirements) -> tuple[str, Bid] | None:
    """Among bids (bidder key id → bid) that meet the requirements: best score, tie by key id."""
    fit = [(key, bid) for key, bid in bids.items() if meets(bid, req)]
    if not fit:
        return None
    return min(fit, key=lambda kb: (-kb[1].score, kb[0]))


def choose_verifiers(plan_id: str, bids: Mapping[str, Bid], executor: str, k: int) -> tuple[Member, ...]:
    """k bidders other than the executor, ordered by sha256(plan id, key id): deterministic for
    a plan, yet spread across nodes from plan to plan."""
    others = sorted((key for key in bids if key != executor),
                    key=lambda key: hashlib.sha256(f"{plan_id}|{key}".encode()).hexdigest())
    return tuple(Member(key, bids[key].address) for key in others[:k])


def make_commit(plan: Plan, bids: Mapping[str, Bid], round: int = 0) -> Commit | None:
    """The commit a proposer makes from these bids, or None while they do not yet provide an
    executor meeting the requirements plus k other nodes to verify."""
    chosen = choose_executor(bids, plan.requirements)
    if chosen is None:
        return None
    verifiers = choose_verifiers(plan.plan_id, bids, chosen[0], plan.verification.verifiers)
    if len(verifiers) < plan.verification.verifiers:
        return None
    return Commit(plan.plan_id, Member(chosen[0], chosen[1].address), verifiers, round)


def capacity_score(memory_bytes: int, gpu: bool, cpus: int, busy_jobs: int) -> float:
    """A node's claim to execute: a GPU dominates, then free memory (GiB), then cores; a busy
    node scores lower. Rounded so that tiny memory fluctuations do not decide between nodes."""
    return round((100.0 if gpu else 0.0) + memory_bytes / 2**30 + 0.5 * cpus - 10.0 * busy_jobs, 1)


def spot_check_names(names: Sequence[str], share: float, seed: str) -> list[str]:
    """A seeded sample of ceil(share × n) tensor names (at least one; all when share is 1), sorted.
    A verifier seeds it with fresh randomness drawn after the result is announced, so that an
    executor cannot know which tensors will be checked; `share` 1.0 needs no seed to be safe."""
    ordered = sorted(names)
    if not ordered:
        return []
    n = min(len(ordered), max(1, int(-(-share * len(ordered) // 1))))
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    return sorted(rng.sample(ordered, n))
