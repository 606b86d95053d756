"""Plan engines joined in-process: real keys, real signatures, one shared fake clock, jobs run
inline (or held for the test to run). The engine tests and the adversary tests build on it.

    build, ids, infos, hub = make_net(tmp_path)
    engines, jobs = build(consent_policy="manual")
"""

from __future__ import annotations

import copy
import time

from node.plans.engine import EngineConfig, PlanEngine
from node.plans.model import Attestation, Bid, PlanInput, Result
from node.plans.rules import InputInfo
from node.plans.state import PlanStore
from registry.identity import Identity

BASE, EXP1, EXP2 = ("sha256:" + c * 64 for c in "abc")
MERGED = "sha256:" + "d" * 64


class Hub:
    """Delivers every broadcast to every other engine, synchronously, in order."""

    def __init__(self) -> None:
        self.engines: dict[str, PlanEngine] = {}
        self.delivered: list[str] = []
        self.dead: set[str] = set()  # nodes that stopped answering
        self.now = time.time()  # one clock for every engine, moved by the tests

    def clock(self) -> float:
        return self.now

    def transport(self, address: str):
        hub = self

        class _T:
            def broadcast(self, kind, bundle, exclude=None):
                for addr, engine in list(hub.engines.items()):
                    if addr not in (address, exclude, *hub.dead):
                        hub.delivered.append(kind)
                        engine.receive(kind, copy.deepcopy(dict(bundle)), sender=address)

            def prove(self, addr, key_id):
                engine = hub.engines.get(addr)
                return engine is not None and addr not in hub.dead and engine.me == key_id

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
        self.memory = 2**30

    def bid(self, plan, address):
        return Bid(plan.plan_id, address, self.memory, False, self.score, "cpu")

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


def make_net(tmp_path):
    """(build, identities, infos, hub): `build(consent_policy, verdicts)` makes three engines."""
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
            addr = f"127.0.0.{i + 1}:1"
            j = Jobs(verdicts[i])
            hub.engines[addr] = PlanEngine(PlanStore(tmp_path / f"n{i}"), ident,
                                           EngineConfig(addr, consent_policy if i == 1 else "accept",
                                                        clock=hub.clock),
                                           hub.transport(addr), Resolver(ident.key_id), j)
            jobs.append(j)
        return list(hub.engines.values()), jobs

    return build, ids, infos, hub


INPUTS = [PlanInput(BASE, "base"), PlanInput(EXP1, "expert"), PlanInput(EXP2, "expert")]
RECIPE = {"merge_method": "ties", "base_model": BASE, "models": [{"model": EXP1}, {"model": EXP2}]}
