"""The plan protocol of one node: every node runs the same engine over the same signed
statements, so all nodes reach the same state for a plan.

    engine = PlanEngine(store, identity, EngineConfig(address), transport, resolver, jobs)
    record = engine.propose(recipe, inputs)          # local client (gRPC Propose)
    engine.receive("bid", bundle, sender="host:port")  # from a peer (gRPC Offer/Consent/Bid/...)
    engine.tick()                                    # periodic: commits, heartbeats, expiry, GC

Statements flood through the network (each node forwards what is new to it, dedup by bundle
digest). Who may say what: the plan is signed by its proposer; a consent by a consenter the
input's signed manifest names (and the plan asks); a commit by the proposer, carrying the bids
and the revealed secret every node re-derives its choice from; heartbeats and the result by the
committed executor; an attestation by a committed verifier. Anything else is dropped and
logged. Everything a peer can make a node hold is bounded: plans per key, bids per plan,
statements parked for plans not seen yet (per plan, expiring, never forwarded), statements per
sender per second.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from node.plans import fusion, rules
from node.plans.choosing import proven_commit
from node.plans.errors import ForgedStatementError, PlanError, PlanInputError, PolicyError
from node.plans.model import (
    FUSION,
    Attestation,
    Bid,
    Commit,
    Consent,
    Heartbeat,
    Plan,
    PlanInput,
    Requirements,
    Result,
    VerificationPolicy,
    beacon_for,
    kind_of,
)
from node.plans.pending import PendingStatements
from node.plans.ports import REPLACEMENT_SLACK, EngineConfig, Jobs, Resolver, Transport
from node.plans.rate import RateLimiter
from node.plans.signing import bundle_digest, sign, verify, verify_commit_bids
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

MAX_SEEN = 100_000  # digests remembered for dedup; the oldest are forgotten first
MAX_ACTIVE_PLANS_PER_KEY = 16  # unfinished plans one proposer key may have on a node
MAX_BIDS_PER_PLAN = 64  # one per key; later bids are ignored
# A node that was down when a statement was flooded never gets it again from gossip (nodes do not
# sync): what an unfinished plan still waits on is sent again this often by its signer.
RESEND_S = 30.0


class PlanEngine:
    def __init__(self, store: PlanStore, identity: Any, config: EngineConfig, transport: Transport,
                 resolver: Resolver, jobs: Jobs) -> None:
        self.store, self.identity, self.config = store, identity, config
        self.transport, self.resolver, self.jobs = transport, resolver, jobs
        self.me: str = identity.key_id
        self._lock = threading.Lock()
        self._seen: dict[str, None] = {}  # insertion-ordered, so the oldest can be dropped
        self._pending = PendingStatements()
        self._limits = RateLimiter()
        self._beats: dict[str, float] = {}  # plan id → when this node last sent its heartbeat
        self._resent: dict[str, float] = {}  # plan id → when this node last re-sent its statements

    # ---- local entry points ------------------------------------------------------------------

    def propose(self, recipe: Mapping[str, Any], inputs: list[PlanInput],
                verification: VerificationPolicy | None = None, requirements: Requirements | None = None,
                ttl_s: int = 3600, deadline_s: int = 0, verifier_keys: tuple[str, ...] = ()) -> PlanRecord:
        """Check references and policies (PolicyError on a `closed` input), sign the plan, send it."""
        verification = verification or VerificationPolicy()
        requirements = requirements or Requirements()
        infos = [self.resolver.input_info(i.model_id) for i in inputs]
        secret = secrets.token_hex(32)
        is_fusion = kind_of(recipe) == FUSION
        if not deadline_s:
            examples = fusion.data_bytes(recipe).count(b"\n") if is_fusion else 0
            deadline_s = rules.default_deadline(is_fusion, sum(i.size_bytes for i in infos), examples,
                                                int(recipe.get("epochs", 1)) if is_fusion else 1)
        plan = Plan.new(proposer=self.me, proposer_address=self.config.address, inputs=inputs, recipe=recipe,
                        license=rules.propagate_license(i.license for i in infos),
                        consents_needed=rules.check_policies(infos), requirements=requirements,
                        verification=verification, ttl_s=ttl_s, beacon=beacon_for(secret), deadline_s=deadline_s,
                        verifier_keys=verifier_keys)
        rules.check_references(plan)
        bundle = sign(self.identity, plan)
        with self._lock:
            self._remember(bundle_digest(bundle))
        if not self._on_plan(Signed(self.me, plan, bundle), secret=secret, answer=False):
            raise PlanError(f"plan {plan.plan_id} was not stored (this node holds too many plans)")
        self.transport.broadcast("plan", bundle)
        self._answer_plan(plan)
        record = self.store.get(plan.plan_id)
        if record is None:
            raise PlanError(f"plan {plan.plan_id} was not stored")
        return record

    def decide(self, plan_id: str, model_id: str, accept: bool, reason: str = "") -> None:
        """Send this node's consent (manual policy) for a model it is a consenter of."""
        record = self.store.resolve(plan_id)
        if self.me not in record.plan.consents_needed.get(model_id, ()):
            raise PlanInputError(f"plan {record.plan_id} does not ask this node's consent for {model_id}; "
                                 "a node consents only for models it published")
        self._emit(Consent(record.plan_id, model_id, accept, reason))

    def tick(self, now: float | None = None) -> None:
        """Expire stale plans and forget old ones; as proposer, commit once consents and bids are
        in and replace a silent executor; as executor, send heartbeats."""
        now = self.config.clock() if now is None else now
        for pid in self.store.collect(now):
            log.info("plan %s: forgotten (finished long ago)", pid)
        self._pending.expire(now)
        for record in self.store.list():
            if record.final:
                self._resent.pop(record.plan_id, None)
                continue
            if rules.is_expired(record.plan, now):
                self.store.update(record.plan_id, lambda r: try_advance(r, EXPIRED, "the plan's expiry passed"))
                continue
            if record.state == EXECUTING and record.commit is not None and record.result is None \
                    and record.commit.body.executor.key_id == self.me:
                self._heartbeat(record, now)
            self._resend(record, now)
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
        if not self._limits.allow(f"peer:{sender or '?'}"):
            log.info("dropped a %s from %s: over its rate limit", kind, sender or "?")
            return False
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
        if not self._limits.allow(f"key:{signed.signer}"):
            log.info("dropped a %s signed by %s…: over its rate limit", kind, signed.signer[:12])
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
        reorder: a result before its commit) is parked, not forwarded, and replayed when the
        plan moves on; parked statements expire."""
        outcome = self._dispatch(kind, signed)
        plan_id = signed.body.plan_id
        if outcome is None:
            self._pending.park(plan_id, kind, signed, self.config.clock())
            return False
        if outcome:
            for k, s in self._pending.take(plan_id):
                if self._apply(k, s):
                    self.transport.broadcast(k, s.bundle)
        return outcome

    def pending_count(self) -> int:
        return len(self._pending)

    def _dispatch(self, kind: str, signed: Signed) -> bool | None:
        if kind == "plan":
            return self._on_plan(signed)
        if self.store.get(signed.body.plan_id) is None:
            return None
        handler = {"consent": self._on_consent, "bid": self._on_bid, "commit": self._on_commit,
                   "heartbeat": self._on_heartbeat, "result": self._on_result,
                   "attestation": self._on_attestation}[kind]
        return handler(signed)

    def _drop(self, kind: str, signed: Signed, why: str) -> bool:
        log.warning("dropped %s by %s…: %s", kind, signed.signer[:12], why)
        return False

    def _on_plan(self, signed: Signed, secret: str = "", answer: bool = True) -> bool:
        plan: Plan = signed.body
        if signed.signer != plan.proposer:
            return self._drop("plan", signed, f"signed by {signed.signer[:12]}…, not its proposer")
        if rules.is_expired(plan, self.config.clock()):
            return self._drop("plan", signed, "already expired")
        try:
            rules.check_references(plan)
            rules.check_plan_policies(plan, [i for i in map(self.resolver.local_info, plan.model_ids()) if i])
        except (PlanInputError, PolicyError) as exc:
            return self._drop("plan", signed, str(exc))
        if self.store.active_by(plan.proposer) >= MAX_ACTIVE_PLANS_PER_KEY:
            return self._drop("plan", signed, f"its proposer already has {MAX_ACTIVE_PLANS_PER_KEY} unfinished plans")
        record = replace(PlanRecord.new(plan, signed.bundle), secret=secret)
        record = try_advance(record, CONSENTING if plan.consents_needed else BIDDING,
                             "waiting for publishers' consent" if plan.consents_needed else "no consent needed")
        if not self.store.add(record):
            return False
        if answer:
            self._answer_plan(plan)
        return True

    def _answer_plan(self, plan: Plan) -> None:
        """Consent for the models this node is a consenter of, and bid to execute."""
        for model_id in plan.model_ids():
            info = self.resolver.local_info(model_id)
            if info is None and self.me in plan.consents_needed.get(model_id, ()):
                info = self._remote_info(model_id)  # a derivative of our model, held elsewhere
            if info is not None and self.me in info.consenters:
                answer = rules.consent_answer(plan, info, self.config.consent_policy)
                if answer is not None:
                    self._emit(answer)
        bid = self.jobs.bid(plan, self.config.address)
        if bid is not None:
            self._emit(bid)

    def _remote_info(self, model_id: str) -> rules.InputInfo | None:
        try:
            return self.resolver.input_info(model_id)
        except PlanInputError:
            return None

    def _on_consent(self, signed: Signed) -> bool:
        c: Consent = signed.body
        record = self.store.get(c.plan_id)
        keys = record.plan.consents_needed.get(c.model_id, ()) if record else ()
        local = self.resolver.local_info(c.model_id)
        if local is not None and signed.signer not in local.consenters:
            return self._drop("consent", signed, f"its signer is not a consenter of {c.model_id}")
        refusal_by_owner = not c.accept and local is not None and signed.signer in local.consenters
        if signed.signer not in keys and not refusal_by_owner:  # a real refusal counts even if the plan omits it
            return self._drop("consent", signed, f"not signed by a consenter the plan asks for {c.model_id}")
        slot = rules.consent_slot(c.model_id, signed.signer)

        def change(r: PlanRecord) -> PlanRecord:
            if r.commit is not None or r.final:  # once committed, a change of mind comes too late
                return r
            r = replace(r, consents={**r.consents, slot: signed})
            tally = rules.tally_consents(r.plan.consents_needed, {k: v.body for k, v in r.consents.items()})
            if not c.accept:
                return try_advance(r, REJECTED, f"a consenter of {c.model_id} refused: {c.reason or 'no reason'}")
            if tally.complete:
                return try_advance(r, BIDDING, "all publishers consented")
            return r

        if self.store.update(c.plan_id, change).consents.get(slot) is not signed:
            return False
        log.info("plan %s: %s… %s the use of %s", c.plan_id, signed.signer[:12], "accepts" if c.accept else "refuses",
                 c.model_id, extra={"plan_id": c.plan_id, "model_id": c.model_id, "key_id": signed.signer})
        self.jobs.consent_received(c.plan_id, c.model_id, signed.bundle, signed.signer)
        return True

    def _on_bid(self, signed: Signed) -> bool:
        bid: Bid = signed.body

        def change(r: PlanRecord) -> PlanRecord:
            if r.commit is not None or signed.signer in r.bids or len(r.bids) >= MAX_BIDS_PER_PLAN:
                return r
            return replace(r, bids={**r.bids, signed.signer: signed})

        taken = self.store.update(bid.plan_id, change).bids.get(signed.signer) is signed
        if taken:
            log.info("plan %s: bid by %s… at %s (%s)", bid.plan_id, signed.signer[:12], bid.address, bid.device,
                     extra={"plan_id": bid.plan_id, "key_id": signed.signer, "peer": bid.address})
        return taken

    def _maybe_commit(self, record: PlanRecord, now: float) -> None:
        plan = record.plan
        if now < plan.created + self.config.bid_window_s:
            return
        commit = proven_commit(record, 0, (), self.transport, self.store, self.me)
        if commit is not None:
            self._emit(commit)
        elif now >= plan.created + self.config.bid_deadline_s:
            why = (f"not enough suitable bidders: {len(record.bids)} bid; the plan needs an executor that meets "
                   f"its requirements and {plan.verification.verifiers} verifiers")
            self.store.update(plan.plan_id, lambda r: try_advance(r, FAILED, why))

    def _executor_gone(self, record: PlanRecord, now: float, slack: float = 1.0) -> bool:
        return rules.executor_gone(record.plan.deadline_s, record.committed_at, record.heartbeat_at, now,
                                   self.config.heartbeat_timeout_s, slack)

    def _maybe_replace_executor(self, record: PlanRecord, now: float) -> None:
        """Replace a committed executor that missed its deadline or stopped sending heartbeats by
        the rule's next choice, with a commit of a higher round; its late result is ignored."""
        current: Commit = record.commit.body  # type: ignore[union-attr]
        if not self._executor_gone(record, now):
            return
        excluded = (*current.excluded, current.executor.key_id)
        commit = proven_commit(record, current.round + 1, excluded, self.transport, self.store, self.me)
        if commit is not None:
            log.warning("plan %s: executor %s missed its deadline or heartbeats; the plan is re-bid", record.plan_id,
                        current.executor.address)
            self._emit(commit)
        else:
            why = f"executor at {current.executor.address} stopped reporting and no other node can take over"
            self.store.update(record.plan_id, lambda r: try_advance(r, FAILED, why))

    def _on_commit(self, signed: Signed) -> bool | None:
        commit: Commit = signed.body
        record = self.store.get(commit.plan_id)
        if record is None or signed.signer != record.plan.proposer:
            return self._drop("commit", signed, "not signed by the plan's proposer")
        bids = verify_commit_bids(commit)
        why = bids if isinstance(bids, str) else rules.commit_mismatch(record.plan, commit, bids)
        if why is not None:
            return self._drop("commit", signed, f"it does not follow the plan's rule: {why}")
        if record.plan.consents_needed and record.state == CONSENTING and not record.final:
            return None  # consents may still be on their way: park it
        current = record.commit.body if record.commit else None
        if current is not None and commit.round > current.round and not \
                self._executor_gone(record, self.config.clock(), REPLACEMENT_SLACK):
            return self._drop("commit", signed, "it replaces an executor that is still reporting in time")
        what = f"executor {commit.executor.key_id[:12]}… at {commit.executor.address}"

        def change(r: PlanRecord) -> PlanRecord:
            # The first commit of a round wins; a higher round replaces an executor that never reported.
            cur = r.commit.body if r.commit else None
            if cur is not None and (commit.round <= cur.round or r.result is not None or r.final):
                return r
            now = self.config.clock()
            r = replace(r, commit=signed, committed_at=now, heartbeat_at=0.0,
                        replaced=(*r.replaced, cur.executor.key_id) if cur else r.replaced)
            if cur is None:
                return try_advance(r, COMMITTED, what)
            reason = f"round {commit.round}: {what} replaces {cur.executor.address}"
            return replace(r, reason=reason, history=(*r.history, (r.state, now, reason)))

        if self.store.update(commit.plan_id, change).commit is not signed:
            return False
        if commit.executor.key_id == self.me:
            self.jobs.submit(lambda: self._execute(commit.plan_id))
        return True

    def _resend(self, record: PlanRecord, now: float) -> None:
        """Every RESEND_S, flood again what this node signed and the plan still waits on, for
        nodes that were down the first time: the proposer its plan while consents are due and
        its commit, the executor its result (nodes that have them drop them as known)."""
        due = []
        if record.plan.proposer == self.me:
            if record.state == CONSENTING:
                due.append(("plan", record.plan_bundle))
            if record.commit is not None:
                due.append(("commit", record.commit.bundle))
        if record.result is not None and record.result.signer == self.me:
            due.append(("result", record.result.bundle))
        if not due or now - self._resent.setdefault(record.plan_id, now) < RESEND_S:
            return
        self._resent[record.plan_id] = now
        for kind, bundle in due:
            self.transport.broadcast(kind, bundle)

    def _heartbeat(self, record: PlanRecord, now: float) -> None:
        if now - self._beats.get(record.plan_id, 0.0) < self.config.heartbeat_s:
            return
        self._beats[record.plan_id] = now
        done, total = record.progress
        self._emit(Heartbeat(record.plan_id, record.commit.body.round, done, total, round(now, 3)))  # type: ignore[union-attr]

    def _on_heartbeat(self, signed: Signed) -> bool | None:
        beat: Heartbeat = signed.body
        record = self.store.get(beat.plan_id)
        if record is not None and record.commit is None and not record.final:
            return None
        if record is None or record.commit is None or signed.signer != record.commit.body.executor.key_id \
                or beat.round != record.commit.body.round:
            return self._drop("heartbeat", signed, "not signed by the executor of the plan's current round")
        if record.final or record.result is not None:
            return False
        progress = (max(0, beat.done), max(0, beat.total))
        self.store.update(beat.plan_id, lambda r: replace(r, heartbeat_at=self.config.clock(), progress=progress),
                          persist=False)
        return True

    def _execute(self, plan_id: str) -> None:
        self.store.update(plan_id, lambda r: try_advance(r, EXECUTING, "merging"))

        def progress(done: int, total: int) -> None:
            self.store.update(plan_id, lambda r: replace(r, progress=(done, total)), persist=done == total)

        record = self.store.get(plan_id)
        if record is None or record.final:
            return
        try:
            self._check_inputs(record.plan)
            result = self.jobs.execute(record, progress)
        except Exception as exc:  # any failure of the merge must reach the other nodes
            log.exception("plan %s: execution failed", plan_id)
            result = Result(plan_id, "", self.config.address, "", 0.0, f"{type(exc).__name__}: {exc}")
        self._emit(result)

    def _check_inputs(self, plan: Plan) -> None:
        """Before a job touches disk: references again, and every input's policy from its signed
        manifest (fetched now if need be), so an executor or verifier never works on a plan with
        a `closed` input or a consent the plan does not ask of the right keys."""
        rules.check_references(plan)
        rules.check_plan_policies(plan, [self.resolver.input_info(mid) for mid in plan.model_ids()])

    def _on_result(self, signed: Signed) -> bool | None:
        res: Result = signed.body
        record = self.store.get(res.plan_id)
        if record is not None and record.commit is None and not record.final:
            return None
        if record is None or record.commit is None or signed.signer != record.commit.body.executor.key_id:
            return self._drop("result", signed, "not signed by the committed executor")

        def change(r: PlanRecord) -> PlanRecord:
            if r.result is not None:
                return r
            r = replace(r, result=signed)
            if res.error:
                return try_advance(r, FAILED, f"the executor failed: {res.error}")
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
            self._check_inputs(record.plan)
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
