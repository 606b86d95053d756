"""The proposer's part of choosing who executes and verifies: the rule's commit
(`rules.make_commit`) over the bids whose addresses answer for their keys.

    commit = proven_commit(record, round, excluded, transport, store, me)   # None: too few proven bids

A Sybil can bid at a live node's address, but it cannot sign for that node's key there, so every
chosen member (but the proposer itself) must answer a fresh challenge (`Plans.Prove`) before the
commit goes out. The challenges of one choice run concurrently: silent addresses cost one
challenge timeout, not one per member.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from node.plans import rules
from node.plans.model import Commit, Member
from node.plans.ports import Transport
from node.plans.state import PlanRecord, PlanStore

log = logging.getLogger(__name__)


def proven_commit(record: PlanRecord, round: int, excluded: tuple[str, ...], transport: Transport,
                  store: PlanStore, me: str) -> Commit | None:
    """The rule's commit of `round` (without the `excluded` keys) whose members all pass the
    challenge. A member that fails is left out for good (remembered in the record, so later
    ticks go on from the next candidates instead of challenging the same Sybils again) and the
    choice is made again."""
    unproven = set(record.unproven)
    bids = {key: (s.body, s.bundle) for key, s in record.bids.items() if key not in unproven}
    while True:
        commit = rules.make_commit(record.plan, bids, record.secret, round, excluded)
        if commit is None:
            return None
        liars = challenge(transport, [m for m in (commit.executor, *commit.verifiers) if m.key_id != me])
        if not liars:
            return commit
        log.warning("plan %s: %d bidder(s) failed the address challenge", record.plan_id, len(liars))
        for key in liars:
            bids.pop(key, None)
        store.update(record.plan_id, lambda r, gone=tuple(liars): replace(
            r, unproven=tuple(dict.fromkeys((*r.unproven, *gone)))))


def challenge(transport: Transport, members: list[Member]) -> list[str]:
    """Keys of the members whose address does not answer for them, challenged all at once."""
    if not members:
        return []
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="plans-prove") as pool:
        answers = list(pool.map(lambda m: transport.prove(m.address, m.key_id), members))
    return [m.key_id for m, ok in zip(members, answers, strict=True) if not ok]
