"""Plan statements on the wire: sign a plan object into a DSSE bundle, verify one from a peer.

    bundle = sign(identity, plan)                 # or a Consent, Bid, Commit, Heartbeat, Result, Attestation
    signed = verify(bundle, "consent")            # Signed(signer, Consent, bundle) or ForgedStatementError

Statements are `registry.statements` bundles (in-toto Statement v1 in a DSSE envelope, with the
signer's public key carried alongside). The subject is the plan id, except for attestations,
whose subject is the merged model they vouch for (so the registry can index them by model).
The predicate is the object's JSON form; `verify` checks that the signed subject is the one the
predicate names, so a statement cannot be replayed for another plan or model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from node.plans.errors import ForgedStatementError, PlanInputError
from node.plans.model import Attestation, Bid, Commit, Consent, Heartbeat, Plan, Result, canonical_json, to_dict
from node.plans.state import Signed
from registry.errors import RegistryError
from registry.statements import ATTESTATION_V1, CONSENT_V1, PLAN_V1, sign_statement, verify_statement

BID_V1 = "https://mergenet.dev/bid/v1"
COMMIT_V1 = "https://mergenet.dev/commit/v1"
RESULT_V1 = "https://mergenet.dev/result/v1"
HEARTBEAT_V1 = "https://mergenet.dev/heartbeat/v1"

KINDS: dict[str, tuple[type, str]] = {
    "plan": (Plan, PLAN_V1), "consent": (Consent, CONSENT_V1), "bid": (Bid, BID_V1),
    "commit": (Commit, COMMIT_V1), "result": (Result, RESULT_V1), "attestation": (Attestation, ATTESTATION_V1),
    "heartbeat": (Heartbeat, HEARTBEAT_V1),
}
_KIND_OF = {cls: kind for kind, (cls, _) in KINDS.items()}


def kind_of(obj: Any) -> str:
    return _KIND_OF[type(obj)]


def _subject(obj: Any) -> str:
    if isinstance(obj, Plan):
        return obj.plan_id
    if isinstance(obj, Attestation):
        return obj.model_id
    return obj.plan_id


def sign(identity: Any, obj: Any) -> dict[str, Any]:
    """A signed statement bundle (JSON-ready dict) over one plan object."""
    kind = kind_of(obj)
    subject = _subject(obj)
    return sign_statement(identity, f"mergenet-{kind}", subject, KINDS[kind][1], to_dict(obj))


def bundle_digest(bundle: Mapping[str, Any]) -> str:
    """A stable name for a bundle, for gossip dedup."""
    return hashlib.sha256(canonical_json(dict(bundle))).hexdigest()


def verify(bundle: Any, kind: str, expected_key_id: str | None = None) -> Signed:
    """The verified object of a `kind` statement; ForgedStatementError when anything is off."""
    if kind not in KINDS:
        raise PlanInputError(f"unknown statement kind {kind!r}; expected one of {', '.join(KINDS)}")
    cls, ptype = KINDS[kind]
    try:
        vs = verify_statement(bundle, expected_key_id=expected_key_id, predicate_type=ptype)
    except RegistryError as exc:
        raise ForgedStatementError(f"{kind} statement rejected: {exc}") from None
    try:
        body = cls.from_dict(vs.predicate)
    except PlanInputError as exc:
        raise ForgedStatementError(f"{kind} statement has a malformed predicate: {exc}") from None
    if _subject(body).removeprefix("sha256:") != vs.subject_digest:
        raise ForgedStatementError(f"{kind} statement's subject {vs.subject_digest[:16]}… is not the "
                                   f"{'model' if kind == 'attestation' else 'plan'} its predicate names")
    return Signed(vs.key_id, body, dict(bundle))


def verify_commit_bids(commit: Commit) -> dict[str, Bid] | str:
    """The bids a commit carries (bidder key → bid), each verified and for this plan, one per
    key; or why they are unusable (every node re-derives the commit's choice from these)."""
    bids: dict[str, Bid] = {}
    for bundle in commit.bids:
        try:
            s = verify(bundle, "bid")
        except (ForgedStatementError, PlanInputError) as exc:
            return f"it carries a bid that does not verify ({exc})"
        if s.body.plan_id != commit.plan_id or s.signer in bids:
            return "it carries a bid for another plan, or two bids by one key"
        bids[s.signer] = s.body
    return bids
