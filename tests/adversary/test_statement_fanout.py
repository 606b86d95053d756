"""A flood of gossiped peer addresses must not multiply a node's plan traffic: a statement goes to
the peers that answered the node and to at most MAX_UNSEEN_PER_ROUND hearsay addresses, not to
every address a stranger named (before, one statement became ~1000 calls to fake peers)."""

from __future__ import annotations

import logging
import re
import time

import pytest

from node.network.client import connect
from node.network.peers import MAX_UNSEEN_PER_ROUND
from node.plans.client import PlansClient
from node.plans.model import Plan, PlanInput
from node.plans.model import canonical_json as plan_json
from node.plans.signing import sign
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.identity import Identity
from tests.adversary.harness import announce, running_node, wait_for
from tests.adversary.test_peer_claims import contacted, fake_addrs

pytestmark = pytest.mark.timeout(120)

SENT_TO = re.compile(r"could not send a (\w+) to (\S+):")
IDS = ["sha256:" + c * 64 for c in "ab"]


STRANGER = "127.0.0.9:1"  # nothing listens there


def stranger_plan() -> tuple[str, dict]:
    """A well-formed plan of a stranger's (its inputs need no consent a node could check)."""
    stranger = Identity.generate()
    recipe = {"merge_method": "linear", "models": [{"model": i, "parameters": {"weight": 0.5}} for i in IDS]}
    plan = Plan.new(proposer=stranger.key_id, proposer_address=STRANGER,
                    inputs=[PlanInput(i, "expert") for i in IDS], recipe=recipe, license="MIT")
    return plan.plan_id, sign(stranger, plan)


def failed_sends(caplog) -> set[tuple[str, str]]:
    """(statement kind, address) of every send that found nobody listening."""
    return {(m.group(1), m.group(2)) for r in caplog.records if (m := SENT_TO.search(r.getMessage()))}


def test_a_statement_reaches_contacted_peers_and_only_a_few_hearsay_addresses(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="node.plans.transport")
    with running_node(tmp_path / "A") as a, running_node(tmp_path / "B") as b:
        announce(a.addr, sender=b.addr)
        assert wait_for(lambda: contacted(a, b.addr), 10.0)
        fakes = fake_addrs(1000)
        for i in range(0, len(fakes), 250):
            announce(a.addr, sender=fakes[i], known=fakes[i + 1:i + 250])
        plan_id, bundle = stranger_plan()
        with connect(a.addr) as ch:
            assert pb_grpc.PlansStub(ch).Offer(pb.PlanStatement(bundle=plan_json(bundle), sender=STRANGER),
                                               timeout=10).accepted
        # B, a peer that answered A, gets the plan (and A's bid) through A.
        assert wait_for(lambda: any(p["plan_id"] == plan_id for p in PlansClient(b.addr).list()), 10.0)
        # Let A's send pool drain: the dialled addresses stop growing.
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 2.0:
            n = len(failed_sends(caplog))
            if n != last:
                last, stable_since = n, time.monotonic()
            time.sleep(0.2)
    dialled = failed_sends(caplog)
    # Each broadcast reaches at most a round's share of hearsay (the fakes and the stranger's own
    # address). Both nodes log through the same logger here: the plan is broadcast by A and by B
    # (which heard of the fakes in A's gossip), the bids by A (its own and B's) and by B (its own).
    broadcasts = {"plan": 2, "bid": 3}
    assert {addr for _, addr in dialled} <= {*fakes, STRANGER}
    per_kind = {kind: sum(1 for k, _ in dialled if k == kind) for kind, _ in dialled}
    assert set(per_kind) == set(broadcasts), per_kind
    assert all(per_kind[k] <= n * MAX_UNSEEN_PER_ROUND for k, n in broadcasts.items()), per_kind
