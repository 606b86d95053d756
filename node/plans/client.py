"""The typed client of a node's Plans service: what the CLI and the demo call.

    client = PlansClient("127.0.0.1:7470", operator_metadata(home))   # home: the node's own
    plan_id = client.propose(recipe, VerificationPolicy(2, 0.1, 1e-4), ttl_s=3600)
    doc = client.status(plan_id)                        # the status document (node.plans.status)
    doc = client.wait(plan_id, timeout=300, on_update=print)
    client.decide(plan_id, model_id, accept=True)

Propose and Decide are operator-only (node.process.auth): without the credential of the node's
home they fail with a PeerError saying the node refused. The credential goes only to `addr`,
never to the executor asked for progress.

Protobuf stays here and in the servicer; callers see plain dicts and the plan errors
(`PolicyError`, `PlanInputError`, `UnknownPlanError`; other failures are `PeerError`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from node.errors import PeerError
from node.network.client import Metadata, connect, rpc_error
from node.plans.errors import PlanError, PlanInputError, PolicyError, UnknownPlanError
from node.plans.model import Requirements, VerificationPolicy
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 60.0
EXECUTOR_TIMEOUT_S = 2.0  # the executor's own status is best effort: a slow one is skipped
POLL_S = 0.5
ERRORS = {grpc.StatusCode.FAILED_PRECONDITION: PolicyError, grpc.StatusCode.INVALID_ARGUMENT: PlanInputError,
          grpc.StatusCode.NOT_FOUND: UnknownPlanError}


class PlansClient:
    """:param addr: the node asked
    :param credential: `operator_metadata(home)` when `addr` is the node of `home`; without it only
        the read-only calls (status, list, wait) work
    """

    def __init__(self, addr: str, credential: Metadata = ()) -> None:
        self.addr = addr
        self.credential = credential

    def _call(self, method: str, request: Any, timeout: float = CALL_TIMEOUT_S, addr: str | None = None) -> Any:
        target = addr or self.addr
        metadata = self.credential if target == self.addr else ()
        with connect(target) as ch:
            try:
                return getattr(pb_grpc.PlansStub(ch), method)(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                error = ERRORS.get(exc.code())
                if error is not None:
                    raise error(exc.details()) from None
                raise rpc_error(exc, target) from None

    def propose(self, recipe: Mapping[str, Any], verification: VerificationPolicy,
                requirements: Requirements | None = None, ttl_s: int = 3600, deadline_s: int = 0,
                verifier_keys: tuple[str, ...] = ()) -> str:
        """The new plan's id. `deadline_s` 0: derived from the inputs (node.plans.rules.default_deadline)."""
        needs = requirements or Requirements()
        request = pb.ProposeRequest(recipe_json=json.dumps(dict(recipe)), verifiers=verification.verifiers,
                                    spot_check=verification.spot_check, tolerance=verification.tolerance,
                                    ttl_s=ttl_s, memory_bytes=needs.memory_bytes, gpu=needs.gpu,
                                    deadline_s=deadline_s, verifier_keys=list(verifier_keys))
        return str(self._call("Propose", request).plan_id)

    def status(self, plan_id: str, executor_progress: bool = True) -> dict[str, Any]:
        """The plan as this node sees it; while the merge runs, progress comes from the executor."""
        doc = json.loads(self._call("Status", pb.PlanStatusRequest(plan_id=plan_id)).status_json)
        executor = doc["executor"]
        if executor_progress and executor and not doc["result"] and not doc["final"] \
                and executor["address"] != self.addr:
            remote = self._executor_status(executor["address"], doc["plan_id"])
            if remote and remote["state"] == "executing":
                doc["state"], doc["progress"] = "executing", remote["progress"]
        return doc

    def _executor_status(self, addr: str, plan_id: str) -> dict[str, Any] | None:
        try:
            reply = self._call("Status", pb.PlanStatusRequest(plan_id=plan_id), EXECUTOR_TIMEOUT_S, addr=addr)
        except (PeerError, PlanInputError):  # the executor is only asked for progress
            return None
        return json.loads(reply.status_json)

    def list(self) -> list[dict[str, Any]]:
        return [json.loads(s) for s in self._call("List", pb.PlanListRequest()).status_json]

    def decide(self, plan_id: str, model_id: str, accept: bool, reason: str = "") -> None:
        self._call("Decide", pb.DecideRequest(plan_id=plan_id, model_id=model_id, accept=accept, reason=reason))

    def wait(self, plan_id: str, timeout: float, on_update: Callable[[dict[str, Any]], None] | None = None,
             ) -> dict[str, Any]:
        """Poll until the plan is final; `on_update` sees every status document. PlanError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status(plan_id)
            if on_update is not None:
                on_update(doc)
            if doc["final"]:
                return doc
            if time.monotonic() >= deadline:
                raise PlanError(f"plan {plan_id} is still {doc['state']} after {timeout:g}s; "
                                "check `mergenet plan status` later")
            time.sleep(POLL_S)
