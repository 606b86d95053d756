"""A plan record as the JSON document `plan status` / `plan ls` show (and the gRPC Status RPC
carries): state, consent, bids, executor, progress, result, attestations (with the measured scores
of a fusion plan), history.

    doc = status_doc(store.get(plan_id))
"""

from __future__ import annotations

from typing import Any

from node.plans import rules
from node.plans.state import PlanRecord


def _consent(record: PlanRecord, model_id: str, key: str) -> dict[str, Any]:
    given = record.consents.get(rules.consent_slot(model_id, key))
    return {"model_id": model_id, "publisher": key, "accept": given.body.accept if given else None,
            "reason": given.body.reason if given else ""}


def status_doc(record: PlanRecord) -> dict[str, Any]:
    plan = record.plan
    commit = record.commit.body if record.commit else None
    result = record.result.body if record.result else None
    k = plan.verification.verifiers
    fusion = plan.is_fusion  # measured, not recomputed: attestations carry scores
    doc = {
        "plan_id": record.plan_id,
        "state": record.state,
        "reason": record.reason,
        "final": record.final,
        "proposer": {"key_id": plan.proposer, "address": plan.proposer_address},
        "created": plan.created,
        "expires": plan.expires,
        "method": f"fusion/{plan.recipe.get('fusion', 'min_ce')}" if fusion else plan.recipe.get("merge_method"),
        "inputs": [{"model_id": i.model_id, "role": i.role} for i in plan.inputs],
        "license": plan.license,
        "verification": {"verifiers": k, "spot_check": plan.verification.spot_check,
                         "tolerance": plan.verification.tolerance},
        "consents": [_consent(record, mid, key) for mid, keys in sorted(plan.consents_needed.items()) for key in keys],
        "bids": [{"key_id": key, "address": s.body.address, "score": s.body.score, "device": s.body.device,
                  "memory_bytes": s.body.memory_bytes} for key, s in sorted(record.bids.items())],
        "executor": {"key_id": commit.executor.key_id, "address": commit.executor.address} if commit else None,
        "verifiers": [{"key_id": v.key_id, "address": v.address} for v in commit.verifiers] if commit else [],
        "progress": {"done": record.progress[0], "total": record.progress[1]},
        "result": {"model_id": result.model_id, "device": result.device, "seconds": result.seconds,
                   "error": result.error} if result else None,
        "attestations": [
            {"verifier": key, "passed": s.body.passed, "tensors_checked": len(s.body.tensors),
             "max_abs_diff": s.body.max_abs_diff, "detail": s.body.detail,
             **({"scores": dict(s.body.scores)} if fusion else {})}
            for key, s in sorted(record.attestations.items())
        ],
        "attestations_needed": k,
        "deadline_s": plan.deadline_s,
        "round": commit.round if commit else 0,
        "history": [{"state": st, "time": t, "reason": why} for st, t, why in record.history],
    }
    if fusion:
        doc["data_sha256"] = plan.recipe.get("data_sha256")
    return doc
