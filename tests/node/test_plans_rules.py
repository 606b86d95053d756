"""Plan policy rules and the plan state machine with its persistence."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from node.plans import rules
from node.plans.errors import PlanInputError, PolicyError, UnknownPlanError
from node.plans.model import Bid, Consent, Plan, PlanInput, Requirements, VerificationPolicy, beacon_for
from node.plans.rules import InputInfo
from node.plans.state import (
    BIDDING,
    COMMITTED,
    CONSENTING,
    EXECUTING,
    EXPIRED,
    PUBLISHED,
    VERIFYING,
    PlanRecord,
    PlanStore,
    Signed,
    TransitionError,
    advance,
    try_advance,
)

A, B, C = ("sha256:" + c * 64 for c in "abc")


def info(mid: str, policy: str, lic: str = "MIT") -> InputInfo:
    return InputInfo(mid, policy, lic, "pub-" + mid[-4:])


def test_policies():
    assert rules.check_policies([info(A, "open"), info(B, "open")]) == {}
    assert rules.check_policies([info(A, "open"), info(B, "consent")]) == {B: ("pub-" + B[-4:],)}
    derived = InputInfo(C, "consent", "MIT", "executor", consenters=("orig-2", "orig-1"))
    assert rules.check_policies([derived]) == {C: ("orig-1", "orig-2")}  # the originals, not the executor
    with pytest.raises(PolicyError, match=f"{C}.*closed"):
        rules.check_policies([info(A, "open"), info(C, "closed")])
    with pytest.raises(PolicyError, match="unknown merge policy"):
        rules.check_policies([info(A, "whatever")])


def test_consent_tally():
    ok, no = Consent("p", B, True), Consent("p", C, False, "not for sale")
    slot = rules.consent_slot
    needed = {B: ("kb",), C: ("kc1", "kc2")}
    assert rules.tally_consents(needed, {}).missing == (B, C)
    assert rules.tally_consents(needed, {slot(B, "kb"): ok}).missing == (C,)
    assert rules.tally_consents(needed, {slot(B, "kb"): ok, slot(C, "kc1"): ok}).missing == (C,)  # both keys
    assert rules.tally_consents(needed, {slot(B, "kb"): ok, slot(C, "kc1"): ok, slot(C, "kc2"): ok}).complete
    assert not rules.tally_consents(needed, {slot(B, "someone-else"): ok, slot(C, "kc1"): ok,
                                             slot(C, "kc2"): ok}).complete
    refused = rules.tally_consents(needed, {slot(B, "kb"): ok, slot(C, "kc2"): no})
    assert not refused.complete and refused.rejected_by == C and refused.reason == "not for sale"


def merge_plan(*refs: str, recipe: dict | None = None, **kw) -> Plan:
    recipe = recipe or {"merge_method": "linear", "models": [{"model": r, "parameters": {"weight": 1.0}} for r in refs]}
    return Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(r, "expert") for r in refs if
                                                                   r.startswith("sha256:")] or [PlanInput(A, "base")],
                    recipe=recipe, license="MIT", **kw)


def test_references_must_be_listed_ids():
    rules.check_references(merge_plan(A, B))
    with pytest.raises(PlanInputError, match="not a model id"):
        rules.check_references(merge_plan(A, "/home/victim/private-model"))
    sneaky = merge_plan(A, recipe={"merge_method": "slerp", "base_model": A, "parameters": {"t": 0.5},
                                      "slices": [{"sources": [{"model": A, "layer_range": [0, 2]},
                                                              {"model": "../other", "layer_range": [0, 2]}]}]})
    with pytest.raises(PlanInputError, match="not a model id"):
        rules.check_references(sneaky)
    unlisted = Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(A, "expert")], license="MIT",
                        recipe={"merge_method": "linear", "models": [{"model": A}, {"model": B}]})
    with pytest.raises(PlanInputError, match="not listed in the plan's inputs"):
        rules.check_references(unlisted)
    tok = merge_plan(A, B, recipe={"merge_method": "linear", "tokenizer_source": "/etc",
                                   "models": [{"model": A}, {"model": B}]})
    with pytest.raises(PlanInputError, match="not a model id"):
        rules.check_references(tok)
    unused = Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(A, "expert"), PlanInput(B, "expert")],
                      license="MIT", recipe={"merge_method": "linear", "models": [{"model": A}]})
    with pytest.raises(PlanInputError, match="not used"):
        rules.check_references(unused)


def test_plan_policies_come_from_manifests_not_the_plan():
    honest = merge_plan(A, B, consents_needed={B: "pub-" + B[-4:]})
    rules.check_plan_policies(honest, [info(A, "open"), info(B, "consent")])
    self_named = merge_plan(A, B, consents_needed={B: "the-proposer"})
    with pytest.raises(PolicyError, match="needs the consent"):
        rules.check_plan_policies(self_named, [info(A, "open"), info(B, "consent")])
    with pytest.raises(PolicyError, match="needs the consent"):
        rules.check_plan_policies(merge_plan(A, B), [info(A, "open"), info(B, "consent")])  # omitted
    with pytest.raises(PolicyError, match="closed"):
        rules.check_plan_policies(merge_plan(A, B), [info(A, "closed")])
    assert rules.output_policy(honest) == "consent" and rules.output_policy(merge_plan(A, B)) == "open"
    assert rules.output_consent_keys(honest) == ("pub-" + B[-4:],)


@pytest.mark.parametrize("licenses, expected", [
    (["MIT", "MIT"], "MIT"),
    (["Apache-2.0", "MIT", "Apache-2.0"], "Apache-2.0 AND MIT"),
    (["MIT", "Apache-2.0"], "Apache-2.0 AND MIT"),
    (["MIT", "GPL-2.0 OR MIT"], "(GPL-2.0 OR MIT) AND MIT"),
    (["MIT", None], "NOASSERTION"),
    (["MIT", ""], "NOASSERTION"),
    ([], "NOASSERTION"),
])
def test_license_propagation(licenses, expected):
    assert rules.propagate_license(licenses) == expected


def test_expiry():
    plan = Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(A, "base")], recipe={},
                    license="MIT", ttl_s=60, now=1000)
    assert not rules.is_expired(plan, 1059.9)
    assert rules.is_expired(plan, 1060)


def bid(score: float, mem: int = 2**30, gpu: bool = False, addr: str = "h:1") -> Bid:
    return Bid("sha256:" + "d" * 64, addr, mem, gpu, score, "cuda" if gpu else "cpu")


SECRET = "5e" * 32


def test_choice_is_ranked_by_the_revealed_secret_and_claims_only_filter():
    plan = merge_plan(A, B, verification=VerificationPolicy(verifiers=2), beacon=beacon_for(SECRET))
    bids = {f"k{i}": bid(1.0, addr=f"h:{i}") for i in range(6)}
    bids["greedy"] = bid(1e12, addr="h:9")  # a huge claimed score buys nothing
    executor, verifiers = rules.choose(plan, bids, SECRET)
    order = sorted(bids, key=lambda k: rules.rank(plan.plan_id, k, SECRET))
    assert executor.key_id == order[0] and [v.key_id for v in verifiers] == order[1:3]
    other = rules.choose(plan, bids, "00" * 32)
    assert other != (executor, verifiers) or order[0] == sorted(bids, key=lambda k: rules.rank(plan.plan_id, k,
                                                                                                  "00" * 32))[0]
    wins = {rules.choose(merge_plan(A, B, beacon=beacon_for(s)), bids, s)[0].key_id
            for s in (f"{i:02x}" * 32 for i in range(40))}
    assert (len(wins) > 3 and "greedy" in wins) or len(wins) > 3  # spread across bidders, the greedy one no likelier
    needy = merge_plan(A, B, requirements=Requirements(memory_bytes=2**31), beacon=beacon_for(SECRET))
    assert rules.choose(needy, bids, SECRET) is None  # nobody meets the memory requirement
    rich = {**bids, "big": bid(1.0, mem=2**32)}
    assert rules.choose(needy, rich, SECRET)[0].key_id == "big"
    assert rules.choose(plan, bids, SECRET, excluded=[order[0]])[0].key_id == order[1]
    picky = merge_plan(A, B, verifier_keys=("k1", "k2", "k3"), beacon=beacon_for(SECRET))
    _, vs = rules.choose(picky, bids, SECRET)
    assert len(vs) == 2 and {v.key_id for v in vs} <= {"k1", "k2", "k3"}


def test_commit_is_checked_against_the_rule():
    plan = merge_plan(A, B, verification=VerificationPolicy(verifiers=2), beacon=beacon_for(SECRET))
    bids = {f"k{i}": bid(1.0, addr=f"h:{i}") for i in range(4)}
    commit = rules.make_commit(plan, {k: (b, {"bundle": k}) for k, b in bids.items()}, SECRET)
    assert rules.commit_mismatch(plan, commit, bids) is None and len(commit.bids) == 4
    assert rules.make_commit(plan, {k: (b, {}) for k, b in list(bids.items())[:2]}, SECRET) is None
    forged = replace(commit, executor=commit.verifiers[0], verifiers=(commit.executor, commit.verifiers[1]))
    assert "not the ones the rule picks" in rules.commit_mismatch(plan, forged, bids)
    assert "beacon" in rules.commit_mismatch(plan, replace(commit, reveal="00" * 32), bids)
    assert "round" in rules.commit_mismatch(plan, replace(commit, round=1), bids)
    assert "do not provide" in rules.commit_mismatch(plan, commit, {"k0": bids["k0"]})


def test_default_deadline_grows_with_work():
    small, big = rules.default_deadline(False, 10**6), rules.default_deadline(False, 10**10)
    assert rules.DEADLINE_FLOOR_S <= small < big
    assert rules.default_deadline(True, 0, examples=1000, epochs=2) > rules.default_deadline(True, 0, examples=10)


def test_capacity_score_prefers_gpu_then_memory():
    assert rules.capacity_score(2**30, True, 2, 0) > rules.capacity_score(64 * 2**30, False, 16, 0)
    assert rules.capacity_score(8 * 2**30, False, 2, 0) > rules.capacity_score(4 * 2**30, False, 2, 0)
    assert rules.capacity_score(8 * 2**30, False, 2, 1) < rules.capacity_score(8 * 2**30, False, 2, 0)


def test_spot_check_sample():
    names = [f"model.layers.{i}.w" for i in range(40)]
    s = rules.spot_check_names(names, 0.1, "seed-a")
    assert len(s) == 4 and set(s) <= set(names) and s == sorted(s)
    assert s == rules.spot_check_names(list(reversed(names)), 0.1, "seed-a")
    assert s != rules.spot_check_names(names, 0.1, "seed-b")
    assert len(rules.spot_check_names(names, 0.0001, "x")) == 1
    assert rules.spot_check_names(names, 1.0, "x") == sorted(names)


def record() -> PlanRecord:
    plan = Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(A, "base")], recipe={"m": 1},
                    license="MIT", now=1000)
    return PlanRecord.new(plan, {"bundle": 1}, now=1000)


def test_state_machine_moves_forward_only():
    r = advance(record(), CONSENTING, "waiting")
    r = advance(r, BIDDING)
    r = advance(r, VERIFYING, "skipped what this node did not see")
    with pytest.raises(TransitionError, match="cannot go from verifying to executing"):
        advance(r, EXECUTING)
    r = advance(r, PUBLISHED, "done")
    with pytest.raises(TransitionError):
        advance(r, EXPIRED)
    assert try_advance(r, EXPIRED) is r
    assert [h[0] for h in r.history] == ["proposed", CONSENTING, BIDDING, VERIFYING, PUBLISHED]
    assert r.final and r.reason == "done"


def test_store_persists_across_restart(tmp_path):
    store = PlanStore(tmp_path / "plans")
    r = record()
    assert store.add(r) and not store.add(r)
    b = Signed("bidder", bid(3.0), {"sig": "x"})
    store.update(r.plan_id, lambda x: advance(x.__class__(**{**x.__dict__, "bids": {"bidder": b}}), COMMITTED))
    again = PlanStore(tmp_path / "plans")
    loaded = again.get(r.plan_id)
    assert loaded.state == COMMITTED and loaded.bids["bidder"].body == b.body and loaded.plan == r.plan
    assert again.resolve(r.plan_id[7:19]).plan_id == r.plan_id
    with pytest.raises(UnknownPlanError, match="matches no plan"):
        again.resolve("ffff")
    files = list((tmp_path / "plans").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["state"] == COMMITTED
    (tmp_path / "plans" / "junk.json").write_text("{not json")
    assert len(PlanStore(tmp_path / "plans").list()) == 1  # a damaged file does not stop the node


def test_consent_answers():
    plan = Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(A, "base"), PlanInput(B, "expert")],
                    recipe={}, license="MIT", consents_needed={B: "pub-" + B[-4:]})
    assert rules.consent_answer(plan, info(A, "open"), "accept") is None  # open models need no answer
    assert rules.consent_answer(plan, info(B, "consent"), "accept").accept
    assert rules.consent_answer(plan, info(B, "consent"), "manual") is None
    refused = rules.consent_answer(plan, info(B, "consent"), "reject")
    assert not refused.accept and "reject" in refused.reason
    omitted = rules.consent_answer(plan, info(A, "consent"), "accept")
    assert not omitted.accept and "omits" in omitted.reason
    assert not rules.consent_answer(plan, info(A, "closed"), "accept").accept
