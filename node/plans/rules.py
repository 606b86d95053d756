"""Policy logic of plans, pure and deterministic so that every node reaches the same decision.

- references: a plan names models only by the ids in its inputs (`check_references`);
- merge policy, from the inputs' signed manifests (never from the plan): `open` needs no
  consent, `consent` needs the signed accept of its consenters (the publisher, or for a
  derivative the original publishers its provenance names), `closed` forbids derivatives
  (`PolicyError`, exit 2); the output inherits the strictest policy (`output_policy`);
- licenses propagate to the output as an SPDX expression;
- expiry and the execution deadline;
- executor and verifier choice: capacity claims only filter; the ranking is sha256(plan id,
  bidder key, the proposer's revealed secret), which nobody controls when bids are made;
- the share of tensor names a verifier recomputes, from a seed the verifier draws itself.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from node.plans.errors import PlanInputError, PolicyError
from node.plans.model import Bid, Commit, Consent, Member, Plan, Requirements
from registry.ids import ModelId

POLICIES = ("open", "consent", "closed")
NO_LICENSE = "NOASSERTION"


@dataclass(frozen=True)
class InputInfo:
    """What a plan needs to know of one input model: from its signed manifest.

    :param consenters: whose consent a plan on it needs when its policy is `consent`: the
        publisher, or for a merged model the original publishers its provenance names
    :param size_bytes: the model's bytes (for the default execution deadline)"""

    model_id: str
    policy: str
    license: str
    publisher: str
    consenters: tuple[str, ...] = ()
    size_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.consenters:
            object.__setattr__(self, "consenters", (self.publisher,))


def check_policies(infos: Iterable[InputInfo]) -> dict[str, tuple[str, ...]]:
    """Model id → the keys that must consent, for each `consent` input; `PolicyError` on `closed`."""
    needs = {}
    for info in infos:
        if info.policy not in POLICIES:
            raise PolicyError(f"model {info.model_id}: unknown merge policy {info.policy!r}; "
                              f"expected one of {', '.join(POLICIES)}")
        if info.policy == "closed":
            raise PolicyError(f"model {info.model_id} has merge policy 'closed': its publisher forbids "
                              f"derivatives; remove it from the recipe")
        if info.policy == "consent":
            needs[info.model_id] = tuple(sorted(set(info.consenters)))
    return needs


def check_plan_policies(plan: Plan, infos: Iterable[InputInfo]) -> None:
    """What every node checks of a plan against the input manifests it can see: no `closed`
    input, and each `consent` input's consenters are exactly the ones the plan asks (a proposer
    cannot name itself or leave someone out). `PolicyError` naming the model otherwise."""
    needed = check_policies(infos)
    for model_id, keys in needed.items():
        if tuple(plan.consents_needed.get(model_id, ())) != keys:
            raise PolicyError(f"model {model_id} needs the consent of {', '.join(k[:12] + '…' for k in keys)} "
                              "(from its signed manifest), which the plan does not ask for")


def output_policy(plan: Plan) -> str:
    """The merge policy of a plan's output: the strictest of its inputs' (`closed` inputs never
    get this far), so a derivative of a `consent` model is `consent` too."""
    return "consent" if plan.consents_needed else "open"


def output_consent_keys(plan: Plan) -> tuple[str, ...]:
    """Whose consent a plan on this plan's output needs: every consenter of its inputs."""
    return tuple(sorted({k for keys in plan.consents_needed.values() for k in keys}))


def check_references(plan: Plan) -> None:
    """Every model the recipe names is a `sha256:` id listed in the plan's inputs, and every
    input is named; `PlanInputError` otherwise. No node ever opens a path a peer wrote. A LoRA
    applied to a model is `sha256:<model>+sha256:<adapter>`: both parts are inputs."""
    from merge.errors import MergeError
    from merge.recipe import load_recipe

    if plan.is_fusion:
        from node.plans import fusion

        refs = [i.model_id for i in fusion.inputs_of(plan.recipe)]
    else:
        try:
            refs = [part for ref in load_recipe(dict(plan.recipe)).model_refs() for part in ref.split("+")]
        except MergeError as exc:
            raise PlanInputError(f"plan recipe: {exc}") from None
    inputs = set(plan.model_ids())
    for ref in refs:
        if ref not in inputs:
            what = "is not a model id" if not ModelId.valid(ref) else "is not listed in the plan's inputs"
            raise PlanInputError(f"plan recipe model {str(ref)[:80]!r} {what}; a plan names models only by "
                                 "the sha256: ids of its inputs")
    unused = inputs - set(refs)
    if unused:
        raise PlanInputError(f"plan input {sorted(unused)[0]} is not used by its recipe")


def consent_answer(plan: Plan, info: InputInfo, node_policy: str) -> Consent | None:
    """What a consenter of input `info` answers to `plan` under its node's consent policy
    (`accept`, `reject` or `manual`: None, the user decides with `plan consent`)."""
    if info.policy == "closed":
        return Consent(plan.plan_id, info.model_id, False, "the model's merge policy is closed")
    if info.policy == "consent" and tuple(plan.consents_needed.get(info.model_id, ())) != \
            tuple(sorted(set(info.consenters))):
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


def tally_consents(needed: Mapping[str, Sequence[str]], consents: Mapping[str, Consent]) -> ConsentTally:
    """`needed`: model id → consenter keys; `consents`: "model id|key" → that key's (already
    signature-checked) consent. Complete when every consenter of every model accepted."""
    for model_id, keys in needed.items():
        for key in keys:
            c = consents.get(consent_slot(model_id, key))
            if c is not None and not c.accept:
                return ConsentTally(False, (), model_id, c.reason)
    missing = tuple(m for m, keys in needed.items() if any(consent_slot(m, k) not in consents for k in keys))
    return ConsentTally(not missing, missing, None)


def consent_slot(model_id: str, key: str) -> str:
    """Where a record keeps one consenter's answer for one model."""
    return f"{model_id}|{key}"


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


def is_expired(plan: Plan, now: float) -> bool:
    return now >= plan.expires


def meets(bid: Bid, req: Requirements) -> bool:
    return bid.memory_bytes >= req.memory_bytes and (bid.gpu or not req.gpu)


def rank(plan_id: str, key: str, reveal: str) -> str:
    """A bidder's place for a plan: known to nobody before the proposer reveals its secret, and
    fixed by then (the proposer published its sha256 in the plan before any bid existed)."""
    return hashlib.sha256(f"{plan_id}|{key}|{reveal}".encode()).hexdigest()


def choose(plan: Plan, bids: Mapping[str, Bid], reveal: str, excluded: Iterable[str] = ()
           ) -> tuple[Member, tuple[Member, ...]] | None:
    """Executor and verifiers from bids (bidder key → bid): the executor is the best-ranked
    bidder whose claimed capacity meets the requirements (claims only filter), not excluded;
    the verifiers the next best-ranked others, not excluded either (an executor that went
    silent verifies nothing; only the plan's verifier keys, when it names some). None while the
    bids do not provide both."""
    gone = set(excluded)
    order = sorted(bids, key=lambda key: rank(plan.plan_id, key, reveal))
    executor = next((k for k in order if k not in gone and meets(bids[k], plan.requirements)), None)
    if executor is None:
        return None
    allowed = set(plan.verifier_keys)
    verifiers = [k for k in order if k != executor and k not in gone and (not allowed or k in allowed)]
    k = plan.verification.verifiers
    if len(verifiers) < k:
        return None
    return Member(executor, bids[executor].address), tuple(Member(v, bids[v].address) for v in verifiers[:k])


def make_commit(plan: Plan, bids: Mapping[str, tuple[Bid, Mapping]], reveal: str, round: int = 0,
                excluded: tuple[str, ...] = ()) -> Commit | None:
    """The commit a proposer makes from these bids (key → (bid, signed bundle)), carrying the
    bundles and its revealed secret so every node can re-derive it; None while not enough bid."""
    chosen = choose(plan, {k: b for k, (b, _) in bids.items()}, reveal, excluded)
    if chosen is None:
        return None
    return Commit(plan.plan_id, chosen[0], chosen[1], round, tuple(dict(bundle) for _, bundle in bids.values()),
                  reveal, excluded)


def commit_mismatch(plan: Plan, commit: Commit, bids: Mapping[str, Bid]) -> str | None:
    """Why `commit` does not follow the rule over its own (verified) bids, or None when it does."""
    if hashlib.sha256(bytes.fromhex(commit.reveal) if _is_hex(commit.reveal) else b"").hexdigest() != plan.beacon:
        return "its revealed secret does not match the plan's beacon"
    if len(commit.excluded) != commit.round:
        return "it excludes a different number of executors than its round"
    chosen = choose(plan, bids, commit.reveal, commit.excluded)
    if chosen is None:
        return "its bids do not provide an executor and enough verifiers"
    if (chosen[0], chosen[1]) != (commit.executor, commit.verifiers):
        return "its executor and verifiers are not the ones the rule picks from its bids"
    return None


def _is_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def executor_gone(deadline_s: float, committed_at: float, heartbeat_at: float, now: float,
                  heartbeat_timeout_s: float, slack: float = 1.0) -> bool:
    """Whether a committed executor missed its deadline or fell silent, by the asking node's
    clock; `slack` < 1 is how other nodes judge a replacement commit (clocks and gossip differ)."""
    silent_for = now - max(committed_at, heartbeat_at)
    return now - committed_at > deadline_s * slack or silent_for > heartbeat_timeout_s * slack


# Default execution deadline: a floor for start-up and fetching, plus the inputs at a slow
# CPU merge rate, or fusion examples × epochs at a slow CPU training rate.
DEADLINE_FLOOR_S = 300
MERGE_BYTES_PER_S = 5 * 10**6
FUSION_EXAMPLE_S = 2.0


def default_deadline(fusion: bool, input_bytes: int, examples: int = 0, epochs: int = 1) -> int:
    """Seconds an executor gets after its commit to report, before the plan is re-bid."""
    work = examples * epochs * FUSION_EXAMPLE_S if fusion else input_bytes / MERGE_BYTES_PER_S
    return int(DEADLINE_FLOOR_S + work)


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
