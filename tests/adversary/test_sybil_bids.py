"""Twenty Sybil bids with enormous claimed capacity on an honest plan: the proposer's address
challenge leaves every one out, for good, and the plan is still committed to honest nodes and
published. Before, the proposer challenged the same top-ranked Sybils again on every tick and
the plan failed at the bid deadline in most draws of the ranking."""

from __future__ import annotations

from node.plans.model import Bid
from node.plans.signing import sign
from node.plans.state import PUBLISHED
from registry.identity import Identity
from tests.node.test_plans_engine import INPUTS, RECIPE, net  # noqa: F401  (net: the engines' fixture)

SYBILS = 20
TICKS = 12  # the proposer drops up to PROOF_ATTEMPTS × (1 + verifiers) Sybils per tick


def test_sybil_bids_never_win_and_never_stall_the_plan(net):  # noqa: F811
    build, ids, *_ = net
    engines, _ = build()
    proposer = engines[2]
    rec = proposer.propose(RECIPE, INPUTS)
    sybils = [Identity.generate() for _ in range(SYBILS)]
    for i, s in enumerate(sybils):  # addresses where nobody answers for the Sybil's key
        bid = sign(s, Bid(rec.plan_id, f"127.0.{i + 1}.9:1", 2**50, True, 1e12, "cuda"))
        assert proposer.receive("bid", bid, sender=f"127.0.{i + 1}.9:1")
    assert len(proposer.store.get(rec.plan_id).bids) == 3 + SYBILS
    for i in range(TICKS):
        proposer.tick(now=rec.plan.created + 2 + i)
    r = proposer.store.get(rec.plan_id)
    assert r.state == PUBLISHED, (r.state, r.reason)
    honest = {i.key_id for i in ids}
    chosen = {r.commit.body.executor.key_id, *(v.key_id for v in r.commit.body.verifiers)}
    assert chosen <= honest
    assert set(r.unproven) <= {s.key_id for s in sybils}
    # Other nodes re-derived the same choice from the bids the commit carries.
    assert all(e.store.get(rec.plan_id).state == PUBLISHED for e in engines)


def test_the_chosen_bidders_are_challenged_at_once(net):  # noqa: F811
    """Every chosen member's address is challenged concurrently: silent addresses cost a commit
    one challenge timeout, not one per member (the tick waits for the challenges)."""
    from tests.node.overlap import Overlap

    build, *_ = net
    engines, _ = build()
    proposer = engines[2]
    real = proposer.transport
    overlap = Overlap(hold_s=0.3)

    class Slow:
        def broadcast(self, *a, **kw):
            return real.broadcast(*a, **kw)

        prove = staticmethod(overlap.wrap(real.prove))

    proposer.transport = Slow()
    rec = proposer.propose(RECIPE, INPUTS)
    proposer.tick(now=rec.plan.created + 2)
    r = proposer.store.get(rec.plan_id)
    commit = r.commit.body
    others = [m for m in (commit.executor, *commit.verifiers) if m.key_id != proposer.me]
    assert len(others) >= 2 and overlap.most == len(others)
    assert r.state == PUBLISHED, (r.state, r.reason)
