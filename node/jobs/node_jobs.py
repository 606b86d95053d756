"""The engine's `Jobs` for a real node: bids from this machine's capacity, merges and
verifications on the job runner, attestations kept in the registry index.

    jobs = NodeJobs(JobContext(home, key_id, lambda: node.addr, holders=node.network.holders))
    engine = PlanEngine(store, identity, config, transport, resolver, jobs)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from node.jobs.context import JobContext
from node.jobs.fusion_jobs import execute_fusion, verify_fusion
from node.jobs.gpu import GpuProbe
from node.jobs.merge_jobs import execute_merge, verify_merge
from node.jobs.runner import JobRunner
from node.plans import rules
from node.plans.model import FUSION, MERGE, Attestation, Bid, Plan, Result
from node.plans.state import PlanRecord
from node.process import metrics
from registry.errors import RegistryError

log = logging.getLogger(__name__)

Execute = Callable[[Plan, JobContext, Callable[[int, int], None] | None], Result]
Verify = Callable[[Plan, Result, str, JobContext], Attestation]
# The one dispatch on a plan's kind: how it is executed and how its result is verified.
JOBS: dict[str, tuple[Execute, Verify]] = {
    MERGE: (execute_merge, verify_merge),
    FUSION: (execute_fusion, verify_fusion),
}


@metrics.counted("merge")
def execute_plan(plan: Plan, ctx: JobContext, progress: Callable[[int, int], None] | None = None) -> Result:
    return JOBS[plan.kind][0](plan, ctx, progress)


@metrics.counted("verify")
def verify_plan(plan: Plan, result: Result, executor: str, ctx: JobContext) -> Attestation:
    """Attest `result` of `plan`, whose committed executor has key id `executor`."""
    return JOBS[plan.kind][1](plan, result, executor, ctx)


class NodeJobs:
    def __init__(self, ctx: JobContext, runner: JobRunner | None = None, bid: bool = True) -> None:
        self.ctx = ctx
        self.runner = runner or JobRunner()
        self.will_bid = bid
        self.gpu = GpuProbe(always=ctx.device == "cuda")
        if ctx.device != "cpu":
            self.gpu.start()

    def bid(self, plan: Plan, address: str) -> Bid | None:
        import psutil

        if not self.will_bid:
            return None
        gpu = self.gpu.available and self.ctx.device != "cpu"
        memory = int(psutil.virtual_memory().available)
        score = rules.capacity_score(memory, gpu, os.cpu_count() or 1, self.runner.busy)
        return Bid(plan.plan_id, address, memory, gpu, score, "cuda" if gpu else "cpu")

    def execute(self, record: PlanRecord, progress: Callable[[int, int], None]) -> Result:
        return execute_plan(record.plan, self.ctx, progress)

    def verify(self, record: PlanRecord) -> Attestation:
        if record.result is None or record.commit is None:
            raise RegistryError(f"plan {record.plan_id} has no result to verify")
        return verify_plan(record.plan, record.result.body, record.commit.body.executor.key_id, self.ctx)

    def submit(self, fn: Callable[[], None]) -> None:
        self.runner.submit(fn)

    def attestation_received(self, model_id: str, bundle: Mapping[str, Any]) -> None:
        from registry.local import LocalRegistry

        registry = LocalRegistry(self.ctx.home)
        try:
            registry.add_attestation(model_id, bundle)
        except RegistryError as exc:  # already checked by the engine; keep going if the index refuses
            log.warning("could not index an attestation for %s: %s", model_id, exc)
        finally:
            registry.close()

    def consent_received(self, plan_id: str, model_id: str, bundle: Mapping[str, Any], signer: str) -> None:
        from registry.home import Home
        from registry.index import Index

        index = Index(Home(self.ctx.home).db_path)
        try:
            index.add_consent(plan_id, model_id, dict(bundle), signer)
        finally:
            index.close()
