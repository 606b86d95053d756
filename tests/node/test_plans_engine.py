"""The plan protocol across several engines with real keys and real signatures, joined by an
in-process transport (the gRPC transport is tested end to end in test_plans_e2e.py): consent,
bids, commit, execution, attestations, publication, and forged or misplaced statements dropped."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import replace

import pytest

from node.plans import rules
from node.plans.errors import PolicyError
from node.plans.model import Attestation, Bid, Consent, Requirements, Result, VerificationPolicy
from node.plans.rules import InputInfo
from node.plans.signing import sign
from node.plans.state import CONSENTING, FAILED, PUBLISHED, REJECTED
from registry.identity import Identity
from registry.statements import CONSENT_V1, sign_statement
from tests.node.plan_hub import BASE, EXP1, EXP2, INPUTS, MERGED, RECIPE, make_net


@pytest.fixture
def net(tmp_path):
    return make_net(tmp_path)


def run_to_end(engines, proposer=2, **kw):
    rec = engines[proposer].propose(RECIPE, INPUTS, **kw)
    engines[proposer].tick(now=rec.plan.created + 2)
    return rec.plan_id


def test_plan_reaches_published_on_every_node(net):
    build, ids, *_ = net
    engines, jobs = build()
    pid = run_to_end(engines)
    for e in engines:
        r = e.store.get(pid)
        assert r.state == PUBLISHED, (r.state, r.reason)
        slot = f"{EXP2}|{ids[1].key_id}"
        assert set(r.consents) == {slot} and r.consents[slot].signer == ids[1].key_id
        assert len(r.bids) == 3 and len(r.passing()) == 2
    r = engines[2].store.get(pid)
    executor = r.commit.body.executor.key_id
    assert executor not in {v.key_id for v in r.commit.body.verifiers}
    assert sum(len(j.executed) for j in jobs) == 1 and sum(len(j.verified) for j in jobs) == 2
    assert r.plan.license == "Apache-2.0 AND MIT"
    states = [h[0] for h in r.history]
    assert states[:4] == ["proposed", "consenting", "bidding", "committed"]
    assert states[-2:] == ["verifying", "published"]  # `executing` is seen by the executor only
    assert jobs[2].indexed == [MERGED, MERGED]
    assert jobs[0].consents == [(EXP2, ids[1].key_id)]


def test_refused_consent_rejects(net):
    build, *_ = net
    engines, jobs = build(consent_policy="reject")
    pid = run_to_end(engines)
    r = engines[0].store.get(pid)
    assert r.state == REJECTED and EXP2 in r.reason and r.commit is None
    assert not any(j.executed for j in jobs)


def test_manual_consent_waits_for_decision(net):
    build, *_ = net
    engines, _ = build(consent_policy="manual")
    rec = engines[2].propose(RECIPE, INPUTS)
    engines[2].tick(now=rec.plan.created + 2)
    assert engines[2].store.get(rec.plan_id).state == CONSENTING
    engines[1].decide(rec.plan_id, EXP2, True)
    engines[2].tick(now=rec.plan.created + 2)
    assert engines[2].store.get(rec.plan_id).state == PUBLISHED


def test_closed_input_refused_at_propose(net):
    build, ids, infos, _ = net
    engines, _ = build()
    infos[EXP1] = InputInfo(EXP1, "closed", "MIT", ids[0].key_id)
    with pytest.raises(PolicyError, match="closed"):
        engines[2].propose(RECIPE, INPUTS)


def test_forged_consent_is_dropped(net, caplog):
    build, ids, *_ = net
    engines, _ = build(consent_policy="manual")
    rec = engines[2].propose(RECIPE, INPUTS)
    # A consent signed by a node that is not EXP2's publisher.
    forged = sign(ids[0], Consent(rec.plan_id, EXP2, True))
    with caplog.at_level(logging.WARNING):
        assert not engines[2].receive("consent", forged, sender="attacker:1")
    assert "not signed by a consenter the plan asks" in caplog.text
    # The real publisher's consent with its predicate edited after signing.
    real = sign(ids[1], Consent(rec.plan_id, EXP2, False, "no"))
    payload = json.loads(base64.b64decode(real["dsseEnvelope"]["payload"]))
    payload["predicate"]["accept"] = True
    real["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    assert not engines[2].receive("consent", real, sender="attacker:1")
    # A consent whose signed subject is another plan than the one its predicate names.
    other = sign_statement(ids[1], "x", "e" * 64, CONSENT_V1, Consent(rec.plan_id, EXP2, True).__dict__)
    assert not engines[2].receive("consent", other, sender="attacker:1")
    assert engines[2].store.get(rec.plan_id).state == CONSENTING
    assert engines[2].store.get(rec.plan_id).consents == {}


def test_forged_attestation_is_dropped_and_failing_one_fails(net):
    build, ids, *_ = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    rec = engines[2].propose(RECIPE, INPUTS, verification=VerificationPolicy(verifiers=1))
    engines[2].tick(now=rec.plan.created + 2)
    commit = engines[2].store.get(rec.plan_id).commit.body
    executor = next(i for i, ident in enumerate(ids) if ident.key_id == commit.executor.key_id)
    jobs[executor].deferred.pop(0)()  # the merge; the verifier's job stays queued
    assert engines[2].store.get(rec.plan_id).state == "verifying"
    verifier = commit.verifiers[0].key_id
    outsider = next(i for i in ids if i.key_id not in (verifier,))
    forged = sign(outsider, Attestation(rec.plan_id, MERGED, ("w",), 0.0, True))
    assert not engines[2].receive("attestation", forged)
    real_verifier = next(i for i in ids if i.key_id == verifier)
    wrong_model = sign(real_verifier, Attestation(rec.plan_id, BASE, ("w",), 0.0, True))
    assert not engines[2].receive("attestation", wrong_model)
    assert engines[2].store.get(rec.plan_id).state == "verifying"
    failing = sign(real_verifier, Attestation(rec.plan_id, MERGED, ("w",), 0.5, False, "tensor w differs by 0.5"))
    assert engines[2].receive("attestation", failing)
    r = engines[2].store.get(rec.plan_id)
    assert r.state == FAILED and "tensor w differs by 0.5" in r.reason


def test_expiry_and_forged_result(net):
    build, ids, *_ = net
    engines, _ = build()
    rec = engines[2].propose(RECIPE, INPUTS, ttl_s=10)
    # A result signed by someone who is not the committed executor (nothing is committed yet).
    bogus = sign(ids[0], Result(rec.plan_id, MERGED, "x:1", "cpu", 1.0))
    engines[2].receive("result", bogus)
    assert engines[2].store.get(rec.plan_id).result is None
    engines[2].tick(now=rec.plan.expires)
    assert engines[2].store.get(rec.plan_id).state == "expired"


def test_commit_must_follow_the_rule_over_its_own_bids(net, caplog):
    build, ids, *_ = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    rec = engines[2].propose(RECIPE, INPUTS)
    pid, secret = rec.plan_id, rec.secret
    bids = {k: (s.body, s.bundle) for k, s in engines[2].store.get(pid).bids.items()}
    good = rules.make_commit(rec.plan, bids, secret)
    # The proposer names someone else as executor: every node re-derives the choice and refuses.
    swapped = replace(good, executor=good.verifiers[0], verifiers=(good.executor, good.verifiers[1]))
    with caplog.at_level(logging.WARNING):
        assert not engines[0].receive("commit", sign(ids[2], swapped))
    assert "not the ones the rule picks" in caplog.text
    # A commit that picks a key that never bid (a forged bid bundle, or none at all).
    stranger = Identity.generate()
    fake = sign(stranger, Bid(pid, "127.0.0.9:1", 2**40, True, 1e12, "cuda"))
    fake["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x30" * 70).decode()
    forged = replace(good, bids=(*good.bids, fake))
    assert not engines[0].receive("commit", sign(ids[2], forged))
    assert not engines[0].receive("commit", sign(ids[2], replace(good, reveal="00" * 32)))  # not the beacon
    assert engines[0].store.get(pid).commit is None
    assert engines[0].receive("commit", sign(ids[2], good))
    other = rules.make_commit(rec.plan, dict(list(bids.items())[:3]), secret)
    assert not engines[0].receive("commit", sign(ids[2], replace(other, verifiers=other.verifiers[::-1])))
    assert engines[0].store.get(pid).commit.body == good
    executor = next(i for i, ident in enumerate(ids) if ident.key_id == good.executor.key_id)
    assert len(jobs[executor].deferred) == 1  # exactly one merge queued, on the committed executor


def test_dead_executor_is_replaced_and_its_late_result_ignored(net):
    build, ids, _, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    jobs[2].memory = 0  # the proposer cannot execute: it verifies, and stays alive to replace the executor
    rec = engines[2].propose(RECIPE, INPUTS, verification=VerificationPolicy(verifiers=1),
                             requirements=Requirements(memory_bytes=1))
    engines[2].tick(now=rec.plan.created + 2)
    first = engines[2].store.get(rec.plan_id).commit.body
    dead = next(i for i, ident in enumerate(ids) if ident.key_id == first.executor.key_id)
    assert dead != 2
    hub.dead.add(f"127.0.0.{dead + 1}:1")
    for i, j in enumerate(jobs):
        if i != dead:
            j.deferred = None  # the living nodes work at once from now on
    hub.now += 20  # silent for less than the heartbeat timeout: nothing happens
    engines[2].tick()
    assert engines[2].store.get(rec.plan_id).commit.body == first
    hub.now += 11  # no heartbeat for 31 s: the executor is replaced by the rule's next choice
    engines[2].tick()
    r = engines[2].store.get(rec.plan_id)
    second = r.commit.body
    assert second.round == 1 and second.executor.key_id != first.executor.key_id
    assert first.executor.key_id not in {v.key_id for v in second.verifiers}
    assert r.replaced == (first.executor.key_id,)
    assert r.state == PUBLISHED, r.reason
    assert r.result.signer == second.executor.key_id
    hub.dead.clear()
    jobs[dead].deferred.pop(0)()  # the old executor wakes up and reports: too late, not its plan any more
    assert engines[2].store.get(rec.plan_id).result.signer == second.executor.key_id


def test_dead_executor_without_replacement_fails(net):
    build, ids, _, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    rec = engines[2].propose(RECIPE, INPUTS)  # k=2: the two other nodes are all there is
    engines[2].tick(now=rec.plan.created + 2)
    first = engines[2].store.get(rec.plan_id).commit.body
    hub.dead.add(next(f"127.0.0.{i + 1}:1" for i, ident in enumerate(ids) if ident.key_id == first.executor.key_id))
    hub.now += 31
    engines[2].tick()
    r = engines[2].store.get(rec.plan_id)
    assert (r.state, r.commit.body) == (FAILED, first) and "no other node can take over" in r.reason
