"""The plan protocol across several engines with real keys and real signatures, joined by an
in-process transport (the gRPC transport is tested end to end in test_plans_e2e.py): consent,
bids, commit, execution, attestations, publication, and forged or misplaced statements dropped."""

from __future__ import annotations

import base64
import copy
import json
import logging
import time

import pytest

from node.plans.engine import EngineConfig, PlanEngine
from node.plans.errors import PolicyError
from node.plans.model import Attestation, Bid, Commit, Consent, Member, PlanInput, Result, VerificationPolicy
from node.plans.rules import InputInfo
from node.plans.signing import sign
from node.plans.state import CONSENTING, FAILED, PUBLISHED, REJECTED, PlanStore
from registry.identity import Identity
from registry.statements import CONSENT_V1, sign_statement

BASE, EXP1, EXP2 = ("sha256:" + c * 64 for c in "abc")
MERGED = "sha256:" + "d" * 64


class Hub:
    """Delivers every broadcast to every other engine, synchronously, in order."""

    def __init__(self) -> None:
        self.engines: dict[str, PlanEngine] = {}
        self.delivered: list[str] = []
        self.dead: set[str] = set()  # nodes that stopped answering

    def transport(self, address: str):
        hub = self

        class _T:
            def broadcast(self, kind, bundle, exclude=None):
                for addr, engine in list(hub.engines.items()):
                    if addr not in (address, exclude, *hub.dead):
                        hub.delivered.append(kind)
                        engine.receive(kind, copy.deepcopy(dict(bundle)), sender=address)

            def alive(self, addr):
                return addr in hub.engines and addr not in hub.dead

        return _T()


class Jobs:
    """Runs jobs inline; the merge result and the verifier's verdict are fixed per node."""

    def __init__(self, verdict: bool = True) -> None:
        self.verdict = verdict
        self.executed: list[str] = []
        self.verified: list[str] = []
        self.indexed: list[str] = []
        self.consents: list[tuple[str, str]] = []
        self.deferred: list | None = None  # a list: jobs wait there until the test runs them
        self.score = 1.0

    def bid(self, plan, address):
        return Bid(plan.plan_id, address, 2**30, False, self.score, "cpu")

    def execute(self, record, progress):
        self.executed.append(record.plan_id)
        progress(1, 1)
        return Result(record.plan_id, MERGED, "here", "cpu", 0.1)

    def verify(self, record):
        self.verified.append(record.plan_id)
        return Attestation(record.plan_id, record.result.body.model_id, ("w",), 0.0 if self.verdict else 0.5,
                           self.verdict, "" if self.verdict else "tensor w differs by 0.5")

    def submit(self, fn):
        if self.deferred is None:
            fn()
        else:
            self.deferred.append(fn)

    def attestation_received(self, model_id, bundle):
        self.indexed.append(model_id)

    def consent_received(self, plan_id, model_id, bundle, signer):
        self.consents.append((model_id, signer))


@pytest.fixture
def net(tmp_path):
    hub = Hub()
    ids = [Identity.generate() for _ in range(3)]
    infos = {BASE: InputInfo(BASE, "open", "MIT", ids[0].key_id),
             EXP1: InputInfo(EXP1, "open", "Apache-2.0", ids[0].key_id),
             EXP2: InputInfo(EXP2, "consent", "MIT", ids[1].key_id)}

    class Resolver:
        def __init__(self, me):
            self.me = me

        def input_info(self, mid):
            return infos[mid]

        def local_info(self, mid):
            return infos[mid] if infos[mid].publisher == self.me else None

    def build(consent_policy="accept", verdicts=(True, True, True)):
        jobs = []
        for i, ident in enumerate(ids):
            addr = f"node{i}:1"
            j = Jobs(verdicts[i])
            hub.engines[addr] = PlanEngine(PlanStore(tmp_path / f"n{i}"), ident,
                                           EngineConfig(addr, consent_policy if i == 1 else "accept"),
                                           hub.transport(addr), Resolver(ident.key_id), j)
            jobs.append(j)
        return list(hub.engines.values()), jobs

    return build, ids, infos, hub


INPUTS = [PlanInput(BASE, "base"), PlanInput(EXP1, "expert"), PlanInput(EXP2, "expert")]
RECIPE = {"merge_method": "ties", "base_model": BASE, "models": [{"model": EXP1}, {"model": EXP2}]}


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
        assert set(r.consents) == {EXP2} and r.consents[EXP2].signer == ids[1].key_id
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
    assert "not signed by the publisher" in caplog.text
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


def test_commit_must_name_enough_verifiers_and_first_commit_wins(net):
    build, ids, *_ = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    rec = engines[2].propose(RECIPE, INPUTS)
    pid = rec.plan_id
    me = Member(ids[0].key_id, "node0:1")
    short = sign(ids[2], Commit(pid, me, (Member(ids[1].key_id, "node1:1"),)))
    assert not engines[0].receive("commit", short)  # k=2 but one verifier
    self_check = sign(ids[2], Commit(pid, me, (me, Member(ids[1].key_id, "node1:1"))))
    assert not engines[0].receive("commit", self_check)  # the executor cannot verify itself
    good = Commit(pid, me, (Member(ids[1].key_id, "node1:1"), Member(ids[2].key_id, "node2:1")))
    assert engines[0].receive("commit", sign(ids[2], good))
    other = Commit(pid, Member(ids[1].key_id, "node1:1"), good.verifiers[::-1])
    assert not engines[0].receive("commit", sign(ids[2], other))  # a second, different commit is ignored
    assert engines[0].store.get(pid).commit.body == good
    assert len(jobs[0].deferred) == 1  # exactly one merge queued, on the first commit's executor


def test_dead_executor_is_replaced_and_its_late_result_ignored(net):
    build, ids, _, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    jobs[2].score = 0.5  # the proposer bids lowest: it verifies, and stays alive to replace the executor
    rec = engines[2].propose(RECIPE, INPUTS, verification=VerificationPolicy(verifiers=1))
    engines[2].tick(now=rec.plan.created + 2)
    first = engines[2].store.get(rec.plan_id).commit.body
    dead = next(i for i, ident in enumerate(ids) if ident.key_id == first.executor.key_id)
    assert dead != 2
    hub.dead.add(f"node{dead}:1")
    for i, j in enumerate(jobs):
        if i != dead:
            j.deferred = None  # the living nodes work at once from now on
    engines[2].tick(now=time.time() + 5)  # within the grace period: nothing happens
    assert engines[2].store.get(rec.plan_id).commit.body == first
    engines[2].tick(now=time.time() + 11)  # a first missed check may be a busy machine
    assert engines[2].store.get(rec.plan_id).commit.body == first
    engines[2].tick(now=time.time() + 17)
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
    hub.dead.add(next(f"node{i}:1" for i, ident in enumerate(ids) if ident.key_id == first.executor.key_id))
    engines[2].tick(now=time.time() + 11)
    engines[2].tick(now=time.time() + 17)
    r = engines[2].store.get(rec.plan_id)
    assert (r.state, r.commit.body) == (FAILED, first) and "no other node can take over" in r.reason
