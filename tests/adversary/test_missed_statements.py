"""A verifier that was down when the executor flooded its result: before, nothing sent the result
again (nodes do not sync), so the plan waited in `verifying` until it expired; now the signers of
what an unfinished plan waits on send it again every RESEND_S and the plan is published."""

from __future__ import annotations

from node.plans.engine import RESEND_S
from node.plans.state import PUBLISHED, VERIFYING
from tests.node.test_plans_engine import INPUTS, RECIPE, net  # noqa: F401  (net: the engines' fixture)


def test_a_verifier_down_when_the_result_was_sent_still_attests(net):  # noqa: F811
    build, *_, hub = net
    engines, jobs = build()
    for j in jobs:
        j.deferred = []
    proposer = engines[2]
    rec = proposer.propose(RECIPE, INPUTS)
    proposer.tick(now=rec.plan.created + 2)  # commit, delivered to every node
    commit = proposer.store.get(rec.plan_id).commit.body
    by_key = {e.me: (addr, e, j) for (addr, e), j in zip(hub.engines.items(), jobs, strict=True)}
    _, _, executor_jobs = by_key[commit.executor.key_id]
    down_key = next(v.key_id for v in commit.verifiers if v.key_id != proposer.me)
    down_addr, down, down_jobs = by_key[down_key]
    hub.dead.add(down_addr)
    executor_jobs.deferred.pop()()  # the merge: its result reaches everyone but the dead verifier
    for j in jobs:
        while j.deferred:
            j.deferred.pop()()  # the live verifier attests
    assert proposer.store.get(rec.plan_id).state == VERIFYING
    assert down.store.get(rec.plan_id).result is None
    hub.dead.clear()  # back up
    later = rec.plan.created + 2 + RESEND_S + 1
    for now in (rec.plan.created + 3, later):
        for e in engines:
            e.tick(now=now)
    assert down_jobs.deferred, "the verifier never got the result again"
    down_jobs.deferred.pop()()
    # Its attestation completes the plan for every node that saw the other one (the verifier
    # itself missed that one while it was down: its own view may stay behind).
    for e in engines:
        if e is not down:
            r = e.store.get(rec.plan_id)
            assert r.state == PUBLISHED, (r.state, r.reason)
    assert down.me in proposer.store.get(rec.plan_id).attestations
