"""Plan policy rules and the plan state machine with its persistence."""

from __future__ import annotations

import json

import pytest

from node.plans import rules
from node.plans.errors import PolicyError, UnknownPlanError
from node.plans.model import Bid, Consent, Plan, PlanInput, Requirements
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
    assert rules.check_policies([info(A, "open"), info(B, "open")]) == []
    assert rules.check_policies([info(A, "open"), info(B, "consent")]) == [B]
    with pytest.raises(PolicyError, match=f"{C}.*closed"):
        rules.check_policies([info(A, "open"), info(C, "closed")])
    with pytest.raises(PolicyError, match="unknown merge policy"):
        rules.check_policies([info(A, "whatever")])


def test_consent_tally():
    ok, no = Consent("p", B, True), Consent("p", C, False, "not for sale")
    assert rules.tally_consents([B, C], {}).missing == (B, C)
    assert rules.tally_consents([B, C], {B: ok}).missing == (C,)
    assert rules.tally_consents([B], {B: ok}).complete
    refused = rules.tally_consents([B, C], {B: ok, C: no})
    assert not refused.complete and refused.rejected_by == C and refused.reason == "not for sale"


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


def test_executor_choice_is_deterministic():
    bids = {"k2": bid(5.0), "k1": bid(5.0), "k3": bid(4.0), "k4": bid(9.0, mem=10)}
    # k4 scores best but lacks memory; k1 and k2 tie and the lower key id wins.
    assert rules.choose_executor(bids, Requirements(memory_bytes=2**20))[0] == "k1"
    assert rules.choose_executor(bids, Requirements())[0] == "k4"
    assert rules.choose_executor(bids, Requirements(gpu=True)) is None
    assert rules.choose_executor({**bids, "k9": bid(1.0, gpu=True)}, Requirements(gpu=True))[0] == "k9"


def test_verifier_choice_excludes_executor_and_is_seeded():
    bids = {f"k{i}": bid(1.0, addr=f"h:{i}") for i in range(6)}
    v = rules.choose_verifiers("plan-1", bids, "k0", 3)
    assert len(v) == 3 and "k0" not in {m.key_id for m in v}
    assert v == rules.choose_verifiers("plan-1", bids, "k0", 3)
    assert all(bids[m.key_id].address == m.address for m in v)
    picks = {tuple(m.key_id for m in rules.choose_verifiers(f"plan-{i}", bids, "k0", 2)) for i in range(20)}
    assert len(picks) > 1  # different plans spread the work
    assert len(rules.choose_verifiers("p", {"k0": bid(1.0)}, "k0", 2)) == 0


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
                    recipe={}, license="MIT", consents_needed={B: "pub"})
    assert rules.consent_answer(plan, info(A, "open"), "accept") is None  # open models need no answer
    assert rules.consent_answer(plan, info(B, "consent"), "accept").accept
    assert rules.consent_answer(plan, info(B, "consent"), "manual") is None
    refused = rules.consent_answer(plan, info(B, "consent"), "reject")
    assert not refused.accept and "reject" in refused.reason
    omitted = rules.consent_answer(plan, info(A, "consent"), "accept")
    assert not omitted.accept and "omits" in omitted.reason
    assert not rules.consent_answer(plan, info(A, "closed"), "accept").accept


def test_make_commit():
    plan = Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(A, "base")], recipe={}, license="MIT")
    bids = {"k1": bid(3.0, addr="h:1"), "k2": bid(2.0, addr="h:2")}
    assert rules.make_commit(plan, bids) is None  # k=2 verifiers need three bidders
    commit = rules.make_commit(plan, {**bids, "k3": bid(1.0, addr="h:3")}, round=2)
    assert commit.executor.key_id == "k1" and {v.key_id for v in commit.verifiers} == {"k2", "k3"}
    assert commit.round == 2 and commit.plan_id == plan.plan_id
