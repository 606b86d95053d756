"""A stranger with throwaway keys against honest plan engines (real keys, real signatures,
engines joined in-process, one fake clock): each test plays one attack of issue 10 and asserts
the honest side's outcome."""

from __future__ import annotations

import logging

import pytest

from node.plans import rules
from node.plans.engine import MAX_ACTIVE_PLANS_PER_KEY, MAX_BIDS_PER_PLAN
from node.plans.errors import PlanInputError, PolicyError
from node.plans.model import (
    Bid,
    Consent,
    Heartbeat,
    Plan,
    PlanInput,
    Requirements,
    Result,
    VerificationPolicy,
    beacon_for,
)
from node.plans.pending import MAX_PENDING_PER_PLAN, PENDING_TTL_S
from node.plans.rules import InputInfo
from node.plans.signing import sign, verify
from node.plans.state import PUBLISHED
from registry.identity import Identity
from registry.statements import PLAN_V1, sign_statement
from tests.node.plan_hub import EXP1, EXP2, INPUTS, RECIPE, make_net


@pytest.fixture
def net(tmp_path):
    return make_net(tmp_path)


def bids_of(engine, plan_id: str) -> list[str]:
    return list(engine.store.get(plan_id).bids)


def offer(engine, plan: Plan, signer: Identity) -> bool:
    return engine.receive("plan", sign(signer, plan), sender="127.0.0.66:1")


def stranger_plan(mallory: Identity, recipe: dict, inputs: list[PlanInput], **kw) -> Plan:
    kw.setdefault("verification", VerificationPolicy(verifiers=1))
    return Plan.new(proposer=mallory.key_id, proposer_address="127.0.0.66:1", recipe=recipe, inputs=inputs,
                    license="MIT", **kw)


@pytest.mark.parametrize("recipe", [
    {"merge_method": "linear", "models": [{"model": "/home/victim/private-model"}, {"model": EXP1}]},
    {"merge_method": "ties", "base_model": "../victim", "models": [{"model": EXP1}, {"model": EXP2}]},
    {"merge_method": "linear", "tokenizer_source": "/etc", "models": [{"model": EXP1}, {"model": EXP2}]},
    {"merge_method": "slerp", "base_model": EXP1, "parameters": {"t": 0.5},
     "slices": [{"sources": [{"model": EXP1, "layer_range": [0, 2]}, {"model": "/srv/x", "layer_range": [0, 2]}]}]},
    {"target": "/home/victim/model", "sources": [EXP1], "data_b64": "", "data_sha256": "0" * 64},
])
def test_a_plan_naming_a_path_is_refused_on_arrival_and_opens_nothing(net, recipe, caplog):
    build, *_ = net
    engines, jobs = build()
    mallory = Identity.generate()
    plan = stranger_plan(mallory, recipe, [PlanInput(EXP1, "expert"), PlanInput(EXP2, "expert")])
    with caplog.at_level(logging.WARNING):
        for engine in engines:
            assert not offer(engine, plan, mallory)
            assert engine.store.list() == []
    assert not any(j.executed or j.verified for j in jobs)
    assert "dropped plan" in caplog.text


def test_a_plan_with_no_verifier_cannot_exist():
    with pytest.raises(PlanInputError, match="verifiers must be"):
        VerificationPolicy(verifiers=0)


def test_a_proposer_cannot_name_itself_as_consenter(net, caplog):
    build, *_ = net
    engines, jobs = build()
    mallory = Identity.generate()
    plan = stranger_plan(mallory, RECIPE, INPUTS, consents_needed={EXP2: mallory.key_id},
                         verification=VerificationPolicy(verifiers=1))
    with caplog.at_level(logging.WARNING):
        assert not offer(engines[1], plan, mallory)  # EXP2's publisher sees its manifest: refused
    assert "needs the consent" in caplog.text and engines[1].store.list() == []
    # Mallory consents "for" EXP2 on the nodes that cannot see its manifest: they count it, but
    # the executor fetches the manifest before it touches anything and refuses to work.
    assert offer(engines[0], plan, mallory)  # and floods it on: node 2 has it too, node 1 refused it again
    assert engines[2].store.get(plan.plan_id) is not None and engines[1].store.get(plan.plan_id) is None
    assert engines[0].receive("consent", sign(mallory, Consent(plan.plan_id, EXP2, True)), sender="127.0.0.66:1")
    assert engines[0].store.get(plan.plan_id).state == "bidding"
    with pytest.raises(PolicyError, match="needs the consent"):
        engines[0]._check_inputs(plan)  # what _execute and _verify run before any job
    engines[0]._execute(plan.plan_id)
    assert not jobs[0].executed


def test_a_closed_input_is_refused_by_every_node_that_sees_it(net):
    build, ids, infos, _ = net
    engines, jobs = build()
    infos[EXP1] = InputInfo(EXP1, "closed", "MIT", ids[0].key_id)
    mallory = Identity.generate()
    plan = stranger_plan(mallory, RECIPE, INPUTS, consents_needed={EXP2: ids[1].key_id})
    assert not offer(engines[0], plan, mallory)  # the publisher of the closed model
    assert offer(engines[2], plan, mallory)  # cannot see it...
    with pytest.raises(PolicyError, match="closed"):
        engines[2]._check_inputs(plan)  # ...until it would work on it: then it reads the manifest
    engines[2]._execute(plan.plan_id)
    engines[2]._verify(plan.plan_id)
    assert not jobs[2].executed and not jobs[2].verified


def test_a_derivative_of_a_consent_model_needs_the_original_publishers(net):
    build, ids, infos, _ = net
    engines, _ = build()
    derived = "sha256:" + "e" * 64
    infos[derived] = InputInfo(derived, "consent", "MIT", publisher="executor-key",
                               consenters=(ids[1].key_id,))  # its provenance names EXP2's publisher
    plan = engines[2].propose({"merge_method": "linear", "models": [{"model": derived}, {"model": EXP1}]},
                              [PlanInput(derived, "expert"), PlanInput(EXP1, "expert")])
    assert plan.plan.consents_needed == {derived: (ids[1].key_id,)}  # not the executor who signed it
    assert rules.output_policy(plan.plan) == "consent"
    assert rules.output_consent_keys(plan.plan) == (ids[1].key_id,)


def test_twenty_sybil_bids_with_huge_scores_do_not_buy_the_execution(net):
    build, ids, _, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    rec = engines[2].propose(RECIPE, INPUTS, verification=VerificationPolicy(verifiers=1))
    sybils = [Identity.generate() for _ in range(20)]
    for s in sybils:  # each claims a GPU and petabytes, at a live node's address
        assert engines[2].receive("bid", sign(s, Bid(rec.plan_id, "127.0.0.1:1", 2**50, True, 1e12, "cuda")),
                                  sender=f"127.0.0.{66 + sybils.index(s)}:1")
    hub.now = rec.plan.created + 2
    engines[2].tick()
    commit = engines[2].store.get(rec.plan_id).commit.body
    members = {commit.executor.key_id, *(v.key_id for v in commit.verifiers)}
    assert members <= {i.key_id for i in ids}  # no Sybil: none could answer the address challenge
    carried = {verify(b, "bid").signer: verify(b, "bid").body for b in commit.bids}
    ranked_above = [k for k in sorted(bids_of(engines[2], rec.plan_id),
                                      key=lambda k: rules.rank(rec.plan_id, k, rec.secret))
                    if k not in carried]
    assert all(k in {s.key_id for s in sybils} for k in ranked_above)  # only challenged Sybils were left out
    assert rules.commit_mismatch(rec.plan, commit, carried) is None  # and every node re-derives the choice


def test_a_colluding_commit_naming_keys_that_never_bid_is_refused(net):
    build, ids, *_ = net
    engines, _ = build()
    mallory, friend = Identity.generate(), Identity.generate()
    secret = "77" * 32
    plan = stranger_plan(mallory, RECIPE, INPUTS, consents_needed={EXP2: ids[1].key_id},
                         verification=VerificationPolicy(verifiers=2), beacon=beacon_for(secret))
    for e in engines:
        offer(e, plan, mallory)
    fake = {k.key_id: (Bid(plan.plan_id, "127.0.0.66:2", 2**40, False, 1.0, "cpu"), {}) for k in (mallory, friend)}
    forged = rules.make_commit(plan, {**fake, "x" * 64: (Bid(plan.plan_id, "127.0.0.66:3", 2**40, False, 1.0,
                                                            "cpu"), {})}, secret)
    for e in engines:
        assert not e.receive("commit", sign(mallory, forged), sender="127.0.0.66:1")  # bids that do not verify
        assert e.store.get(plan.plan_id).commit is None


def test_a_silent_executor_is_replaced_and_heartbeats_from_others_do_not_count(net):
    build, ids, _, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    jobs[2].memory = 0  # the proposer cannot execute
    rec = engines[2].propose(RECIPE, INPUTS, verification=VerificationPolicy(verifiers=1),
                             requirements=Requirements(memory_bytes=1))
    hub.now = rec.plan.created + 2
    engines[2].tick()
    first = engines[2].store.get(rec.plan_id).commit.body
    # A stranger (or another bidder) keeps "heartbeating" for the silent executor: dropped.
    impostor = next(i for i in ids if i.key_id != first.executor.key_id)
    for _ in range(5):
        hub.now += 10
        assert not engines[2].receive("heartbeat", sign(impostor, Heartbeat(rec.plan_id, 0, 1, 2, hub.now)))
    engines[2].tick()
    second = engines[2].store.get(rec.plan_id).commit.body
    assert second.round == 1 and second.executor.key_id != first.executor.key_id
    assert second.excluded == (first.executor.key_id,)


def test_real_heartbeats_keep_an_executor_but_not_past_its_deadline(net):
    build, ids, _, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    jobs[2].memory = 0
    rec = engines[2].propose(RECIPE, INPUTS, verification=VerificationPolicy(verifiers=1),
                             requirements=Requirements(memory_bytes=1), deadline_s=400)
    hub.now = rec.plan.created + 2
    engines[2].tick()
    first = engines[2].store.get(rec.plan_id).commit.body
    executor = next(i for i in ids if i.key_id == first.executor.key_id)
    for _ in range(12):  # 360 s of regular heartbeats: still the executor
        hub.now += 30 - 0.5
        assert engines[2].receive("heartbeat", sign(executor, Heartbeat(rec.plan_id, 0, 1, 9, hub.now)))
        engines[2].tick()
        assert engines[2].store.get(rec.plan_id).commit.body == first
    assert engines[2].store.get(rec.plan_id).progress == (1, 9)
    hub.now += 60  # past the 400 s deadline, heartbeats or not
    engines[2].receive("heartbeat", sign(executor, Heartbeat(rec.plan_id, 0, 2, 9, hub.now)))
    engines[2].tick()
    assert engines[2].store.get(rec.plan_id).commit.body.round == 1


def test_a_hundred_year_plan_is_refused(net):
    build, ids, *_ = net
    engines, _ = build()
    mallory = Identity.generate()
    plan = stranger_plan(mallory, RECIPE, INPUTS, consents_needed={EXP2: ids[1].key_id})
    forever = {**plan.to_dict(), "expires": plan.created + 100 * 365 * 86400}
    bundle = sign_statement(mallory, "mergenet-plan", "ab" * 32, PLAN_V1, forever)
    for engine in engines:
        assert not engine.receive("plan", bundle, sender="127.0.0.66:1")
        assert engine.store.list() == []
    with pytest.raises(PlanInputError, match="lifetime"):
        stranger_plan(mallory, RECIPE, INPUTS, ttl_s=100 * 365 * 86400)


def test_statements_for_unknown_plans_are_never_forwarded_and_their_buffer_is_bounded(net):
    build, _, _, hub = net
    engines, _ = build()
    mallory = Identity.generate()
    unknown = "sha256:" + "9" * 64
    before = len(hub.delivered)
    for i in range(MAX_PENDING_PER_PLAN + 50):
        bundle = sign(mallory, Result(unknown, "", f"127.0.0.66:{i + 1}", "cpu", 0.0, f"noise {i}"))
        assert not engines[0].receive("result", bundle, sender="127.0.0.66:1")
    assert len(hub.delivered) == before  # nothing was flooded on
    assert engines[0].pending_count() == MAX_PENDING_PER_PLAN
    hub.now += PENDING_TTL_S + 1
    engines[0].tick()
    assert engines[0].pending_count() == 0


def test_bids_per_plan_and_plans_per_key_are_capped(net):
    build, ids, *_ = net
    engines, _ = build()
    rec = engines[2].propose(RECIPE, INPUTS)
    for _ in range(MAX_BIDS_PER_PLAN + 10):
        s = Identity.generate()
        engines[0].receive("bid", sign(s, Bid(rec.plan_id, "127.0.0.66:5", 1, False, 1.0, "cpu")),
                           sender=f"127.0.0.{_ % 200 + 1}:9")
    assert len(engines[0].store.get(rec.plan_id).bids) == MAX_BIDS_PER_PLAN
    mallory = Identity.generate()
    accepted = sum(offer(engines[0], stranger_plan(mallory, RECIPE, INPUTS, consents_needed={EXP2: ids[1].key_id}),
                         mallory) for _ in range(MAX_ACTIVE_PLANS_PER_KEY + 5))
    assert accepted == MAX_ACTIVE_PLANS_PER_KEY


def test_one_sender_flooding_statements_hits_its_rate_limit(net):
    build, *_ = net
    engines, _ = build()
    rec = engines[2].propose(RECIPE, INPUTS)
    mallory = Identity.generate()
    taken = sum(engines[0].receive("consent", sign(mallory, Consent(rec.plan_id, EXP1, True, f"{i}")),
                                   sender="127.0.0.66:1") for i in range(400))
    assert taken == 0  # not a consenter: dropped either way
    assert not engines[0]._limits.allow("peer:127.0.0.66:1")  # its bucket is empty


def test_finished_plans_are_forgotten_after_the_retention(net):
    from node.plans.state import RETAIN_FINAL_S

    build, *_ = net
    engines, _ = build()
    rec = engines[2].propose(RECIPE, INPUTS)
    engines[2].tick(now=rec.plan.created + 2)
    assert engines[2].store.get(rec.plan_id).state == PUBLISHED
    engines[2].tick(now=rec.plan.created + RETAIN_FINAL_S + 10)
    assert engines[2].store.get(rec.plan_id) is None
    assert not list(engines[2].store.root.glob("*.json"))
