"""The Plans gRPC service of a node: wiring (store, engine, jobs, ticker) and the servicer.

    plans = PlanService(home, identity, network, address)   # the node builds it, knowing its address
    PlansServicer(plans, network.peers)                       # served by node.process.services
    plans.run(stop_event)                                     # the ticker, on a thread the node owns

Propose, Status, List and Decide serve local clients (Propose and Decide only the operator: its
token is checked by `node.process.auth.OperatorGate` before a request gets here);
Offer/Consent/Bid/Commit/Report/Attest carry signed statements between nodes (flooded; the engine
verifies, dedups and forwards).
The node's consent policy (`accept`, `reject` or `manual`) comes from $MERGENET_CONSENT_POLICY,
else from the file `consent_policy` in the home, else `accept`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import grpc

from node.errors import NodeError, NodeInputError
from node.plans import fusion, proof
from node.plans.engine import EngineConfig, PlanEngine
from node.plans.errors import PlanInputError, PolicyError, UnknownPlanError
from node.plans.model import FUSION, PlanInput, Requirements, VerificationPolicy, kind_of
from node.plans.state import PlanStore
from node.plans.status import status_doc
from node.plans.transport import GrpcTransport, NodeResolver, parse_bundle
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.ids import ModelId

log = logging.getLogger(__name__)

CONSENT_POLICY_ENV = "MERGENET_CONSENT_POLICY"
CONSENT_POLICY_FILE = "consent_policy"
TICK_S = 0.25
# A fusion plan carries its data (≤ fusion.MAX_DATA_BYTES, base64 twice); one gRPC message holds 1 MiB + 64 KiB.
MAX_STATEMENT_BYTES = 1024 * 1024


def consent_policy(home: Path) -> str:
    value = os.environ.get(CONSENT_POLICY_ENV, "")
    if not value and (home / CONSENT_POLICY_FILE).is_file():
        value = (home / CONSENT_POLICY_FILE).read_text().strip()
    return value or "accept"


def inputs_from_recipe(recipe: Any) -> list[PlanInput]:
    """Plan inputs from a parsed recipe: the base model is `base`, every other model `expert`
    (a LoRA adapter in `model+adapter` too); each must be a model id (`sha256:<hex>`) so that
    every node means the same bytes."""
    inputs: dict[str, PlanInput] = {}
    for ref in recipe.model_refs():
        for i, part in enumerate(ref.split("+")):
            if not ModelId.valid(part):
                raise PlanInputError(f"recipe model {part!r} is not a model id; submit it and use its sha256:<hex> id")
            inputs.setdefault(part, PlanInput(part, "base" if ref == recipe.base_model and i == 0 else "expert"))
    return list(inputs.values())


class PlanService:
    """One node's plan machinery, built once the node's address is known; `run` is the ticker
    loop, which the node runs on a thread it owns and ends by setting `stop`."""

    def __init__(self, home: Path, identity: Any, network: Any, address: str) -> None:
        from node.jobs.context import JobContext
        from node.jobs.node_jobs import NodeJobs

        ctx = JobContext(home, identity.key_id, lambda: address, holders=network.holders,
                         announce=network.models_changed, peers=network.peers)
        self.engine = PlanEngine(PlanStore(home / "plans"), identity, EngineConfig(address, consent_policy(home)),
                                 GrpcTransport(network.peers, lambda: address), NodeResolver(home, network),
                                 NodeJobs(ctx))
        self.engine.resume()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(TICK_S):
            try:
                self.engine.tick()
            except Exception:  # one bad tick must not end the loop; the traceback goes to the log
                log.exception("plan tick failed")


class PlansServicer(pb_grpc.PlansServicer):
    def __init__(self, service: PlanService, peers: Any) -> None:
        self.engine = service.engine
        self.peers = peers

    def Propose(self, request: pb.ProposeRequest, context: grpc.ServicerContext) -> pb.ProposeReply:
        from merge.errors import MergeInputError
        from merge.recipe import load_recipe

        engine = self.engine
        try:
            recipe = json.loads(request.recipe_json)
            if kind_of(recipe) == FUSION:  # heterogeneous: data travels inline, inputs are target/expert
                inputs = fusion.validate(recipe)
            else:
                recipe = load_recipe(recipe).to_dict()
                inputs = inputs_from_recipe(load_recipe(recipe))
            verification = VerificationPolicy(request.verifiers, request.spot_check, request.tolerance)
            record = engine.propose(recipe, inputs, verification, Requirements(request.memory_bytes, request.gpu),
                                    ttl_s=request.ttl_s or 3600, deadline_s=request.deadline_s,
                                    verifier_keys=tuple(request.verifier_keys))
        except PolicyError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (PlanInputError, MergeInputError, NodeInputError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NodeError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.ProposeReply(plan_id=record.plan_id)

    def _statement(self, kind: str, request: pb.PlanStatement, context: grpc.ServicerContext) -> pb.PlanAck:
        engine = self.engine
        try:
            bundle = parse_bundle(request.bundle, MAX_STATEMENT_BYTES)
        except PlanInputError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        sender = request.sender or None
        if sender:
            self.peers.add(sender, source="plans")
        accepted = engine.receive(kind, bundle, sender=sender)
        log.info("%s statement from %s: %s", kind, sender or context.peer(), "accepted" if accepted else "not applied",
                 extra={"kind": kind, "peer": sender})
        return pb.PlanAck(accepted=accepted)

    def Offer(self, request, context):
        return self._statement("plan", request, context)

    def Consent(self, request, context):
        return self._statement("consent", request, context)

    def Bid(self, request, context):
        return self._statement("bid", request, context)

    def Commit(self, request, context):
        return self._statement("commit", request, context)

    def Report(self, request, context):
        return self._statement("result", request, context)

    def Attest(self, request, context):
        return self._statement("attestation", request, context)

    def Heartbeat(self, request, context):
        return self._statement("heartbeat", request, context)

    def Prove(self, request: pb.ProveRequest, context: grpc.ServicerContext) -> pb.ProveReply:
        try:
            pem, signature = proof.answer(self.engine.identity, request.nonce)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.ProveReply(public_key_pem=pem, signature=signature)

    def Status(self, request: pb.PlanStatusRequest, context: grpc.ServicerContext) -> pb.PlanStatusReply:
        engine = self.engine
        try:
            record = engine.store.resolve(request.plan_id)
        except UnknownPlanError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.PlanStatusReply(status_json=json.dumps(status_doc(record)))

    def List(self, request: pb.PlanListRequest, context: grpc.ServicerContext) -> pb.PlanListReply:
        engine = self.engine
        return pb.PlanListReply(status_json=[json.dumps(status_doc(r)) for r in engine.store.list()])

    def Decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.PlanAck:
        engine = self.engine
        try:
            record = engine.store.resolve(request.plan_id)
        except UnknownPlanError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        try:
            engine.decide(record.plan_id, request.model_id, request.accept, request.reason)
        except PlanInputError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.PlanAck(accepted=True)
