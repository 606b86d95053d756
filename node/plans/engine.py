"""The plan protocol of one node: every node runs the same engine over the same signed
statements, so all nodes reach the same state for a plan.

    engine = PlanEngine(store, identity, EngineConfig(address), transport, resolver, jobs)
    record = engine.propose(recipe, inputs)          # local client (gRPC Propose)
    engine.receive("bid", bundle, sender="host:port")  # from a peer (gRPC Offer/Consent/Bid/...)
    engine.tick()                                    # periodic: proposer commits, expiry

Statements flood through the network (each node forwards what is new to it, dedup by bundle
digest). Who may say what: the plan is signed by its proposer; a consent by the publisher the
plan names for that model; a commit by the proposer; a result by the committed executor; an
attestation by a committed verifier. Anything else is dropped and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from node.plans import rules
from node.plans.errors import ForgedStatementError, PlanError, PlanInputError
from node.plans.model import (
    Attestation,
    Bid,
    Commit,
    Consent,
    Plan,
    PlanInput,
    Requirements,
    Result,
    VerificationPolicy,
)
from node.plans.ports import EngineConfig, ExecutorWatch, Jobs, Resolver, Transport
from node.plans.signing import bundle_digest, sign, verify
from node.plans.state import (
    BIDDING,
    COMMITTED,
    CONSENTING,
    EXECUTING,
    EXPIRED,
    FAILED,
    PUBLISHED,
    REJECTED,
    VERIFYING,
    PlanRecord,
    PlanStore,
    Signed,
    try_advance,
)
from node.process import metrics

log = logging.getLogger(__name__)

MAX_PENDING = 256  # statements held for plans not seen yet (gossip may reorder)
MAX_SEEN = 100_000  # digests remembered for dedup; the oldest are forgotten first


class PlanEngine:
    def __init__(self, store: PlanStore, identity: Any, config: EngineConfig, transport: Transport,
                 resolver: Resolver, jobs: Jobs) -> None:
        self.store, self.identity, self.config = store, identity, config
        self.transport, self.resolver, self.jobs = transport, resolver, jobs
        self.me: str = identity.key_id
        self._lock = threading.Lock()
        self._seen: dict[str, None] = {}  # insertion-ordered, so the oldest can be dropped
        self._pending: dict[str, list[tuple[str, Signed]]] = {}
        self._watch = ExecutorWatch(config)

    # ---- local entry points ------------------------------------------------------------------

    def propose(self, recipe: Mapping[str, Any], inputs: list[PlanInput],
                verification: VerificationPolicy | None = None, requirements: Requirements | None = None,
                ttl_s: int = 3600) -> PlanRecord:
        """Check policies (PolicyError on a `closed` input), sign the plan and send it out."""
        verification = verification or VerificationPolicy()
        requirements = requirements or Requirements()
        infos = [self.resolver.input_info(i.model_id) for i in inputs]
        needed = rules.check_policies(infos)
        plan = Plan.new(proposer=self.me, proposer_address=self.config.address, inputs=inputs, recipe=recipe,
                        license=rules.propagate_license(i.license for i in infos),
                        consents_needed={i.model_id: i.publisher for i in infos if i.model_id in needed},
                        requirements=requirements, verification=verification, ttl_s=ttl_s)
        self._emit(plan)
        record = self.store.get(plan.plan_id)
        if record is None:
            raise PlanError(f"plan {plan.plan_id} was not stored")
        return record

    def decide(self, plan_id: str, model_id: str, accept: bool, reason: str = "") -> None:
        """Send this node's consent (manual policy) for one of its models."""
        self._emit(Consent(plan_id, model_id, accept, reason))

    def tick(self, now: float | None = None) -> None:
        """Expire stale plans; as proposer, commit once consents and bids are in."""
        now = time.time() if now is None else now
        for record in self.store.list():
            if record.final:
                continue
            if rules.is_expired(record.plan, now):
                self.store.update(record.plan_id, lambda r: try_advance(r, EXPIRED, "the plan's expiry passed"))
                continue
            if record.plan.proposer != self.me:
                continue
            if record.state == BIDDING and record.commit is None:
                self._maybe_commit(record, now)
            elif record.commit is not None and record.result is None:
                self._maybe_replace_executor(record, now)

    def resume(self) -> None:
        """After a restart: re-run this node's unfinished execution and verification jobs."""
        for record in self.store.list():
            if record.final or record.commit is None:
                continue
            if record.commit.body.executor.key_id == self.me and record.result is None:
                self.jobs.submit(lambda pid=record.plan_id: self._execute(pid))
            elif record.result is not None and self.me not in record.attestations and \
                    any(v.key_id == self.me for v in record.commit.body.verifiers):
                self.jobs.submit(lambda pid=record.plan_id: self._verify(pid))

    # ---- statements ---------------------------------------------------------------------------

    def receive(self, kind: str, bundle: Mapping[str, Any], sender: str | None = None) -> bool:
        """Handle a statement from a peer: verify, apply, forward. False when dropped or known."""
        digest = bundle_digest(bundle)
        with self._lock:
            if digest in self._seen:
                return False
            self._remember(digest)
        try:
            signed = verify(bundle, kind)
        except (ForgedStatementError, PlanInputError) as exc:
            log.warning("dropped a %s statement from %s: %s", kind, sender or "?", exc)
            metrics.record_refused(metrics.BAD_STATEMENT)
            return False
        if not self._apply(kind, signed):
            return False
        self.transport.broadcast(kind, bundle, exclude=sender)
        return True

    def _emit(self, obj: Any) -> None:
        bundle = sign(self.identity, obj)
        with self._lock:
            self._remember(bundle_digest(bundle))
        kind = type(obj).__name__.lower()
        if self._apply(kind, Signed(self.me, obj, bundle)):
            self.transport.broadcast(kind, bundle)

    def _remember(self, digest: str) -> None:
        self._seen[digest] = None
        if len(self._seen) > MAX_SEEN:
            del self._seen[next(iter(self._seen))]

    def _apply(self, kind: str, signed: Signed) -> bool:
        """Apply a verified statement. One that arrives before what it builds on (gossip may
        reorder: a result before its commit) is parked and replayed when the plan moves on."""
        outcome = self._dispatch(kind, signed)
        plan_id = signed.body.plan_id
        if outcome is None:
            with self._lock:
                if sum(map(len, self._pending.values())) < MAX_PENDING:
                    self._pending.setdefault(plan_id, []).append((kind, signed))
            return True
        if outcome:
            with self._lock:
                parked = self._pending.pop(plan_id, [])
            for item in parked:
                self._apply(*item)
        return outcome

    def _dispatch(self, kind: str, signed: Signed) -> bool | None:
        if kind == "plan":
            return self._on_plan(signed)
        if self.store.get(signed.body.plan_id) is None:
            return None
        handler = {"consent": self._on_consent, "bid": self._on_bid, "commit": self._on_commit,
                   "result": self._on_result, "attestation": self._on_attestation}[kind]
        return handler(signed)

    def _drop(self, kind: str, signed: Signed, why: str) -> bool:
        log.warning("dropped %s by %s…: %s", kind, signed.signer[:12], why)
        return False

    def _on_plan(self, signed: Signed) -> bool:
        plan: Plan = signed.body
        if signed.signer != plan.proposer:
            return self._drop("plan", signed, f"signed by {signed.signer[:12]}…, not its proposer")
        if rules.is_expired(plan, time.time()):
            return self._drop("plan", signed, "already expired")
        record = PlanRecord.new(plan, signed.bundle)
        record = try_advance(record, CONSENTING if plan.consents_needed else BIDDING,
                             "waiting for publishers' consent" if plan.consents_needed else "no consent needed")
        if not self.store.add(record):
            return False
        self._answer_plan(plan)
        return True

    def _answer_plan(self, plan: Plan) -> None:
        """Consent for our own models, and bid to execute."""
        for model_id in plan.model_ids():
            info = self.resolver.local_info(model_id)
            if info is not None and info.publisher == self.me:
                answer = rules.consent_answer(plan, info, self.config.consent_policy)
                if answer is not None:
                    self._emit(answer)
        bid = self.jobs.bid(plan, self.config.address)
        if bid is not None:
            self._emit(bid)

    def _on_consent(self, signed: Signed) -> bool:
        c: Consent = signed.body
        record = self.store.get(c.plan_id)
        publisher = record.plan.consents_needed.get(c.model_id) if record else None
        local = self.resolver.local_info(c.model_id)
        if publisher is None and not c.accept and local is not None and local.publisher == signed.signer:
            publisher = signed.signer  # a refusal by the real publisher counts even if the plan omitted it
        if publisher != signed.signer:
            return self._drop("consent", signed, f"not signed by the publisher of {c.model_id}")

        def change(r: PlanRecord) -> PlanRecord:
            if r.commit is not None or r.final:  # once committed, a change of mind comes too late
                return r
            r = replace(r, consents={**r.consents, c.model_id: signed})
            tally = rules.tally_consents(list(r.plan.consents_needed), {k: v.body for k, v in r.consents.items()})
            if not c.accept:
                return try_advance(r, REJECTED, f"the publisher of {c.model_id} refused: {c.reason or 'no reason'}")
            if tally.complete:
                return try_advance(r, BIDDING, "all publishers consented")
            return r

        if self.store.update(c.plan_id, change).consents.get(c.model_id) is not signed:
            return False
        self.jobs.consent_received(c.plan_id, c.model_id, signed.bundle, signed.signer)
        return True

    def _on_bid(self, signed: Signed) -> bool:
        bid: Bid = signed.body
        self.store.update(bid.plan_id, lambda r: r if r.commit else replace(r, bids={**r.bids, signed.signer: signed}))
        return True

    def _maybe_commit(self, record: PlanRecord, now: float) -> None:
        plan = record.plan
        if now < plan.created + self.config.bid_window_s:
            return
        commit = rules.make_commit(plan, {k: s.body for k, s in record.bids.items()})
        if commit is not None:
            self._emit(commit)
        elif now >= plan.created + self.config.bid_deadline_s:
            why = (f"not enough suitable bidders: {len(record.bids)} bid; the plan needs an executor that meets "
                   f"its requirements and {plan.verification.verifiers} verifiers")
            self.store.update(plan.plan_id, lambda r: try_advance(r, FAILED, why))

    def _maybe_replace_executor(self, record: PlanRecord, now: float) -> None:
        """Replace a committed executor that stopped answering (the node died) by the next best
        bidder, with a commit of a higher round; its late result, if any, is then ignored."""
        current: Commit = record.commit.body  # type: ignore[union-attr]
        if not self._watch.dead(record, now, self.transport.alive):
            return
        gone = {*record.replaced, current.executor.key_id}
        bids = {key: s.body for key, s in record.bids.items() if key not in gone}
        commit = rules.make_commit(record.plan, bids, current.round + 1)
        if commit is not None:
            log.warning("plan %s: executor %s stopped answering; replacing it", record.plan_id,
                        current.executor.address)
            self._emit(commit)
        else:
            why = f"executor at {current.executor.address} stopped answering and no other node can take over"
            self.store.update(record.plan_id, lambda r: try_advance(r, FAILED, why))

    def _on_commit(self, signed: Signed) -> bool:
        commit: Commit = signed.body
        record = self.store.get(commit.plan_id)
        if record is None or signed.signer != record.plan.proposer:
            return self._drop("commit", signed, "not signed by the plan's proposer")
        if len(commit.verifiers) < record.plan.verification.verifiers or \
                commit.executor.key_id in {v.key_id for v in commit.verifiers}:
            return self._drop("commit", signed, "names too few verifiers, or the executor as its own verifier")
        why = f"executor {commit.executor.key_id[:12]}… at {commit.executor.address}"

        def change(r: PlanRecord) -> PlanRecord:
            # The first commit of a round wins, even if two race in; a higher round replaces an
            # executor that never reported.
            current = r.commit.body if r.commit else None
            if current is not None and (commit.round <= current.round or r.result is not None or r.final):
                return r
            now = time.time()
            r = replace(r, commit=signed, committed_at=now,
                        replaced=(*r.replaced, current.executor.key_id) if current else r.replaced)
            if current is None:
                return try_advance(r, COMMITTED, why)
            reason = f"round {commit.round}: {why} replaces {current.executor.address}"
            return replace(r, reason=reason, history=(*r.history, (r.state, now, reason)))

        if self.store.update(commit.plan_id, change).commit is not signed:
            return False
        if commit.executor.key_id == self.me:
            self.jobs.submit(lambda: self._execute(commit.plan_id))
        return True

    def _execute(self, plan_id: str) -> None:
        self.store.update(plan_id, lambda r: try_advance(r, EXECUTING, "merging"))

        def progress(done: int, total: int) -> None:
            self.store.update(plan_id, lambda r: replace(r, progress=(done, total)), persist=done == total)

        record = self.store.get(plan_id)
        if record is None or record.final:
            return
        try:
            result = self.jobs.execute(record, progress)
        except Exception as exc:  # any failure of the merge must reach the other nodes
            log.exception("plan %s: execution failed", plan_id)
            result = Result(plan_id, "", self.config.address, "", 0.0, f"{type(exc).__name__}: {exc}")
        self._emit(result)

    def _on_result(self, signed: Signed) -> bool | None:
        res: Result = signed.body
        record = self.store.get(res.plan_id)
        if record is not None and record.commit is None and not record.final:
            return None
        if record is None or record.commit is None or signed.signer != record.commit.body.executor.key_id:
            return self._drop("result", signed, "not signed by the committed executor")
        k = record.plan.verification.verifiers

        def change(r: PlanRecord) -> PlanRecord:
            if r.result is not None:
                return r
            r = replace(r, result=signed)
            if res.error:
                return try_advance(r, FAILED, f"the executor failed: {res.error}")
            if k == 0:
                return try_advance(r, PUBLISHED, "no verification requested")
            return try_advance(r, VERIFYING, f"merged into {res.model_id}")

        record = self.store.update(res.plan_id, change)
        if record.result is not signed:
            return False
        if not res.error and any(v.key_id == self.me for v in record.commit.body.verifiers):
            self.jobs.submit(lambda: self._verify(res.plan_id))
        return True

    def _verify(self, plan_id: str) -> None:
        record = self.store.get(plan_id)
        if record is None or record.result is None:
            return
        try:
            att = self.jobs.verify(record)
        except Exception as exc:  # an attestation that says why is better than silence
            log.exception("plan %s: verification failed", plan_id)
            att = Attestation(plan_id, record.result.body.model_id, (), 0.0, False,
                              f"could not verify: {type(exc).__name__}: {exc}")
        self._emit(att)

    def _on_attestation(self, signed: Signed) -> bool | None:
        att: Attestation = signed.body
        record = self.store.get(att.plan_id)
        if record is not None and (record.commit is None or record.result is None) and not record.final:
            return None
        if record is None or record.commit is None or record.result is None:
            return self._drop("attestation", signed, "arrived for a plan that ended without a result")
        if not any(v.key_id == signed.signer for v in record.commit.body.verifiers):
            return self._drop("attestation", signed, "not signed by a committed verifier")
        if att.model_id != record.result.body.model_id:
            return self._drop("attestation", signed, "names another model than the plan's result")
        k = record.plan.verification.verifiers

        def change(r: PlanRecord) -> PlanRecord:
            if signed.signer in r.attestations:
                return r
            r = replace(r, attestations={**r.attestations, signed.signer: signed})
            if not att.passed:
                return try_advance(r, FAILED, f"verifier {signed.signer[:12]}… rejected the result: {att.detail}")
            if len(r.passing()) >= k:
                return try_advance(r, PUBLISHED, f"{k} verifier(s) attested the result")
            return r

        if self.store.update(att.plan_id, change).attestations.get(signed.signer) is not signed:
            return False
        self.jobs.attestation_received(att.model_id, signed.bundle)
        return True
