"""What the status page shows, as one JSON-ready document read from a running node.

    doc = node_state(node)   # {"node", "peers", "models", "plans", "transfers", "generated"}

Models come with their trust (is the signer in this home's trusted-keys list), who attested
them, where they are held, and for a merged model its provenance tree: the method, recipe, plan
and executor of its signed manifest, and each input, itself expanded when it is a merged model
this node holds. Everything here is data; the page escapes it when it shows it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from node.plans.status import status_doc
from node.process.metrics import TRANSFERS
from registry.errors import RegistryError
from registry.provenance import Provenance
from registry.statements import verify_statement

log = logging.getLogger(__name__)

# A provenance tree is expanded this many merges deep (ids are content hashes, so no cycles;
# the bound keeps one hostile chain of merged models from making the page arbitrarily large).
MAX_PROVENANCE_DEPTH = 8


def node_state(node: Any) -> dict[str, Any]:
    from registry.local import LocalRegistry

    registry = LocalRegistry(node.home)
    try:
        records = {r.id: r for r in registry.list()}
        models = [_model(rec, records, registry.is_trusted(rec.signer), node.network.holders(rec.id))
                  for rec in records.values()]
    finally:
        registry.close()
    ref = node.network.self_ref
    return {
        "generated": time.time(),
        "node": {"addr": node.addr, "key_id": ref.key_id, "version": ref.version, "dht": bool(node.dht_maddrs)},
        "peers": [_peer(p) for p in sorted(node.network.peers.all(), key=lambda p: p.addr)],
        "models": models,
        "plans": [_plan(r) for r in sorted(node.plans.engine.store.list(), key=lambda r: -r.plan.created)],
        "transfers": [{"direction": t.direction, "what": t.what, "peer": t.peer, "started": t.started,
                       "done_bytes": t.done_bytes, "total_bytes": t.total_bytes} for t in TRANSFERS.snapshot()],
    }


def _peer(peer: Any) -> dict[str, Any]:
    return {"addr": peer.addr, "key_id": peer.key_id, "version": peer.version, "source": peer.source,
            "last_seen": peer.last_seen, "bad": not peer.usable(time.time()), "bad_reason": peer.bad_reason}


def _model(rec: Any, records: dict[str, Any], trusted: bool, holders: list[str]) -> dict[str, Any]:
    m = rec.manifest
    return {"id": rec.id, "name": m.name, "kind": m.kind, "signer": rec.signer, "trusted": trusted,
            "license": m.license, "size": rec.size, "attestations": attestations(rec.attestations),
            "holders": holders, "provenance": provenance_tree(rec, records)}


def attestations(bundles: Any) -> list[dict[str, Any]]:
    """Who attested, and whether they passed the model (bundles were verified when indexed)."""
    out = []
    for bundle in bundles:
        try:
            vs = verify_statement(bundle)
        except RegistryError as exc:
            log.debug("skipping an unreadable attestation: %s", exc)
            continue
        out.append({"signer": vs.key_id, "passed": bool(vs.predicate.get("passed")),
                    "detail": str(vs.predicate.get("detail", ""))})
    return out


def provenance_tree(rec: Any, records: dict[str, Any], depth: int = 0) -> dict[str, Any] | None:
    """The merged model's signed provenance with its inputs, expanded where they are held merged models."""
    if rec.manifest.provenance is None:
        return None
    try:
        prov = Provenance.from_dict(rec.manifest.provenance)
    except RegistryError as exc:
        return {"error": str(exc)}
    inputs = []
    for item in prov.inputs:
        held = records.get(str(item.id)) if item.id else None
        node: dict[str, Any] = {"role": item.role, "ref": item.ref, "id": item.id, "digests": item.digests,
                                "name": held.manifest.name if held else None}
        if held is not None and depth + 1 < MAX_PROVENANCE_DEPTH:
            node["provenance"] = provenance_tree(held, records, depth + 1)
            node["attestations"] = attestations(held.attestations)
        inputs.append(node)
    return {"method": prov.method, "recipe": dict(prov.recipe), "plan_id": prov.plan_id, "executor": prov.executor,
            "device": prov.device, "mergenet_version": prov.mergenet_version, "inputs": inputs}


def _plan(record: Any) -> dict[str, Any]:
    doc = status_doc(record)
    keep = ("plan_id", "state", "reason", "method", "inputs", "license", "executor", "verifiers", "progress",
            "result", "attestations", "attestations_needed", "history")
    return {k: doc[k] for k in keep}
