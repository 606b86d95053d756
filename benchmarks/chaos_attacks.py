"""The hostile peers of benchmarks/chaos.py: in-process attackers with their own keys that reach
honest nodes only through the gRPC surface every node offers to strangers.

    attacker = Attacker("mallory", Identity.generate(), world, rng)
    outcomes = attacker.attack("sybil_bids", victim)     # ["bid stored", ...], one per message
    ok = outcome_expected("sybil_bids", "bid stored")     # is this how a victim should answer?

`world` tells an attacker what a stranger could learn anyway (which nodes are up, their homes'
paths to name in a plan, the models they hold), so each attack can aim at something real. Every
address an attacker writes, forged ones included, is in 127.0.0.0/8, and every loop it runs is
bounded in count and in time. An outcome is a short phrase: how the victim answered (a gRPC
status, a dropped statement, a table that stayed bounded). `EXPECTED` lists, per attack, the
answers an honest node may give; anything else is reported as not refused.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.network.client import CHANNEL_OPTIONS
from node.network.peers import MAX_PEERS
from node.network.view import MAX_HOLDERS_LISTED
from node.plans import rules
from node.plans.model import (
    Attestation,
    Bid,
    Commit,
    Consent,
    Heartbeat,
    Member,
    Plan,
    PlanInput,
    Result,
    beacon_for,
    canonical_json,
)
from node.plans.signing import sign
from node.process.auth import TOKEN_METADATA_KEY
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.identity import Identity
from registry.services.limits import MAX_FETCH_STREAMS_PER_CLIENT
from registry.statements import PLAN_V1, sign_statement

CALL_TIMEOUT_S = 10.0
SYBILS = 20  # throwaway bidders per Sybil attack
SYBIL_WAIT_S = 10.0  # how long a Sybil attack watches the victims' plan lists for one still taking bids
FLOOD_STREAMS = 16  # Fetch streams opened and never read
STREAM_HOLD_S = 6.0  # how long the unread streams are kept open before the attacker lets go
FAKE_PEERS_PER_ANNOUNCE = 250  # below the registry's 256 items per request
PEER_FLOOD_CALLS = 8  # 2000 fake addresses per flood
FAKE_AD_SENDERS = 40
UNKNOWN_PLAN_STATEMENTS = 20
GOODBYE_CHECK_S = 16.0  # after node.network.leaving's checks (3 s and 12 s) a forged goodbye is settled
OVERSIZED_BYTES = 2 * 1024 * 1024  # past every node's 1 MiB + 64 KiB receive limit
NEAR_LIMIT_BYTES = 1024 * 1024 + 16 * 1024  # gRPC takes it; the plans service's 1 MiB statement cap does not
HUNDRED_YEARS_S = 100 * 365 * 86400
HOSTILE_TTL_S = 600
# Which statement kind each Plans RPC carries (node.plans.transport.METHODS, read the other way).
RPC_OF = {"plan": "Offer", "consent": "Consent", "bid": "Bid", "commit": "Commit", "result": "Report",
          "attestation": "Attest", "heartbeat": "Heartbeat"}

# The answers an honest node may give to each attack. "victim down" (UNAVAILABLE while the chaos
# loop has it killed) is neutral for every attack.
DROPPED, STORED = "dropped", "stored"
EXPECTED: dict[str, frozenset[str]] = {
    "garbage_statement": frozenset({"INVALID_ARGUMENT", DROPPED}),
    "forged_signature": frozenset({DROPPED}),
    "forged_consent": frozenset({DROPPED}),
    "forged_commit": frozenset({DROPPED}),
    "forged_result": frozenset({DROPPED}),
    "local_path_plan": frozenset({DROPPED, "PERMISSION_DENIED"}),
    # A node that holds the consent model sees the plan asks the wrong key and drops it; one that
    # does not hold it may store the plan, but every executor checks the manifest before any job
    # (chaos.py asserts no hostile plan was ever committed or merged).
    "self_consent_plan": frozenset({DROPPED, STORED, "consent dropped", "consent stored"}),
    "rule_breaking_commit": frozenset({"commit dropped", "plan dropped"}),
    "sybil_bids": frozenset({"bid stored", DROPPED, "no honest plan in bidding"}),
    "stream_flood": frozenset({"RESOURCE_EXHAUSTED", "held (within the per-client cap)", "no blob to ask for"}),
    "peer_flood": frozenset({"OK", "RESOURCE_EXHAUSTED", "peer table bounded"}),
    "forged_goodbye": frozenset({"goodbye ignored (holder still listed)", "inconclusive", "RESOURCE_EXHAUSTED"}),
    "ad_fake_senders": frozenset({"accepted", "RESOURCE_EXHAUSTED", "holders capped", "no ad to copy"}),
    "oversized_message": frozenset({"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}),
    "ttl_100_years": frozenset({DROPPED}),
    "unknown_plan_statement": frozenset({DROPPED}),
    "operator_rpc": frozenset({"PERMISSION_DENIED"}),
}
ATTACKS = tuple(EXPECTED)
NEUTRAL = frozenset({"victim down"})


def outcome_expected(attack: str, outcome: str) -> bool:
    return outcome in EXPECTED[attack] or outcome in NEUTRAL


@dataclass(frozen=True)
class Victim:
    """An honest node as an attacker aims at it."""

    name: str
    addr: str
    key_id: str
    home: Path


@dataclass
class World:
    """What a stranger can learn anyway: the live honest nodes (a callable, as the chaos loop
    kills and restarts them) and the ids of the models they submitted."""

    victims: Callable[[], list[Victim]]
    incarnation: Callable[[str], int]  # how often a node has been (re)started: a kill in between is visible
    models: dict[str, str]  # name → model id ("base", "expert1", ...); "consent" names the consent one
    owners: dict[str, str]  # honest node name → the name of the model it submitted (a real holder)
    hostile_plans: set[str] = field(default_factory=set)
    sybil_keys: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_plan(self, plan_id: str) -> None:
        with self.lock:
            self.hostile_plans.add(plan_id)

    def note_sybils(self, keys: Sequence[str]) -> None:
        with self.lock:
            self.sybil_keys.update(keys)


def fake_addr(rng: random.Random) -> str:
    """A loopback address nothing listens on (ports 20000-29999 of 127.x.y.z, never 127.0.0.1)."""
    return f"127.{rng.randint(1, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}:{rng.randint(20000, 29999)}"


class SourceProxy:
    """A TCP relay on 127.0.0.1 whose connections reach `target` from another loopback address, so
    a hostile peer is its own host to the victim (its per-host stream and gossip budgets are its
    own, as they would be across a real network; gRPC cannot choose a client's source address)."""

    def __init__(self, target: str, source_ip: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target, self.source_ip = (host, int(port)), source_ip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"proxy-{target}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=CALL_TIMEOUT_S,
                                                    source_address=(self.source_ip, 0))
            except OSError:  # the victim is down: the client sees the connection drop
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both."""
    with contextlib.suppress(OSError):
        while data := src.recv(1 << 16):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def code_of(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return "victim down"
    return code.name if code is not None else "error"


class Attacker:
    """One hostile key and the attacks it can make; `attack` returns one outcome per attempt.

    :param source_ip: the loopback address its connections come from (its own "host")"""

    def __init__(self, name: str, identity: Identity, world: World, rng: random.Random,
                 source_ip: str = "127.0.0.1") -> None:
        self.name, self.identity, self.world, self.rng = name, identity, world, rng
        self.source_ip = source_ip
        self._proxies: dict[str, SourceProxy] = {}
        self.stopping = threading.Event()  # set by the chaos loop: long attacks give up their wait

    def close(self) -> None:
        for proxy in self._proxies.values():
            proxy.close()

    # ---- plumbing --------------------------------------------------------------------------

    def _via(self, addr: str) -> str:
        """Where to dial `addr` from this attacker's own address."""
        if self.source_ip == "127.0.0.1":
            return addr
        if addr not in self._proxies:
            self._proxies[addr] = SourceProxy(addr, self.source_ip)
        return self._proxies[addr].addr

    def _channel(self, addr: str, big: bool = False, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        # The oversized attack sends past mergenet's own limits: the victim must refuse, not us.
        base = (("grpc.max_send_message_length", -1),) if big else CHANNEL_OPTIONS
        return grpc.insecure_channel(self._via(addr), options=(*base, *options))

    def _statement(self, addr: str, kind: str, data: bytes, sender: str | None = None) -> str:
        """Send raw statement bytes through the Plans RPC of `kind`; how the victim answered."""
        with self._channel(addr, big=len(data) > NEAR_LIMIT_BYTES // 2) as ch:
            try:
                ack = getattr(pb_grpc.PlansStub(ch), RPC_OF[kind])(
                    pb.PlanStatement(bundle=data, sender=sender or fake_addr(self.rng)), timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                return code_of(exc)
        return STORED if ack.accepted else DROPPED

    def _send(self, addr: str, obj_or_bundle: Any, kind: str | None = None) -> str:
        if isinstance(obj_or_bundle, dict):
            bundle = obj_or_bundle
        else:
            bundle = sign(self.identity, obj_or_bundle)
            kind = type(obj_or_bundle).__name__.lower()
        return self._statement(addr, kind or "plan", canonical_json(bundle))

    def _plans(self, addr: str) -> list[dict[str, Any]]:
        """The victim's plans as its open, read-only List shows them."""
        with self._channel(addr) as ch:
            try:
                reply = pb_grpc.PlansStub(ch).List(pb.PlanListRequest(), timeout=CALL_TIMEOUT_S)
            except grpc.RpcError:
                return []
        return [json.loads(s) for s in reply.status_json]

    def _honest_plans(self, addr: str, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        mine = self.world.hostile_plans
        return [d for d in self._plans(addr) if d["plan_id"] not in mine and (states is None or d["state"] in states)]

    def _plan(self, recipe: dict[str, Any], inputs: list[PlanInput], consents: dict[str, list[str]] | None = None,
              secret: str | None = None, ttl_s: int = HOSTILE_TTL_S) -> Plan:
        return Plan.new(proposer=self.identity.key_id, proposer_address=fake_addr(self.rng), inputs=inputs,
                        recipe=recipe, license="MIT", consents_needed=consents, ttl_s=ttl_s,
                        beacon=beacon_for(secret) if secret else None, deadline_s=600)

    def _open_recipe(self) -> tuple[dict[str, Any], list[PlanInput]]:
        m = self.world.models
        recipe = {"merge_method": "linear", "dtype": "float32",
                  "models": [{"model": m["expert1"], "parameters": {"weight": 0.5}},
                             {"model": m["expert3"], "parameters": {"weight": 0.5}}]}
        return recipe, [PlanInput(m["expert1"], "expert"), PlanInput(m["expert3"], "expert")]

    def _fake_id(self) -> str:
        return "sha256:" + secrets.token_hex(32)

    def attack(self, name: str, victim: Victim) -> list[str]:
        return getattr(self, f"_{name}")(victim)

    # ---- statements --------------------------------------------------------------------------

    def _garbage_statement(self, v: Victim) -> list[str]:
        kind = self.rng.choice(list(RPC_OF))
        payloads = [secrets.token_bytes(self.rng.randint(1, 4096)), b"[1, 2, 3]", b'{"dsseEnvelope": 7}',
                    json.dumps({"payload": "x" * 64, "signatures": []}).encode()]
        return [self._statement(v.addr, kind, p) for p in payloads]

    def _forged_signature(self, v: Victim) -> list[str]:
        """A plan signed by a throwaway key, its payload then changed under the signature."""
        recipe, inputs = self._open_recipe()
        bundle = sign(Identity.generate(), self._plan(recipe, inputs))
        envelope = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["license"] = "Proprietary"
        envelope["payload"] = base64.b64encode(canonical_json(statement)).decode()
        return [self._send(v.addr, bundle, "plan")]

    def _forged_consent(self, v: Victim) -> list[str]:
        plans = self._honest_plans(v.addr) or [{"plan_id": self._fake_id()}]
        plan_id = self.rng.choice(plans)["plan_id"]
        return [self._send(v.addr, Consent(plan_id, self.world.models["consent"], True, "I own it, honest"))]

    def _forged_commit(self, v: Victim) -> list[str]:
        plans = self._honest_plans(v.addr, ("bidding", "consenting", "committed")) or [{"plan_id": self._fake_id()}]
        plan_id = self.rng.choice(plans)["plan_id"]
        me = Member(self.identity.key_id, fake_addr(self.rng))
        return [self._send(v.addr, Commit(plan_id, me, (me,), 0, (), "00" * 32, ()))]

    def _forged_result(self, v: Victim) -> list[str]:
        plans = self._honest_plans(v.addr) or [{"plan_id": self._fake_id()}]
        plan_id = self.rng.choice(plans)["plan_id"]
        fake_model = self._fake_id()
        return [self._send(v.addr, Result(plan_id, fake_model, fake_addr(self.rng), "cpu", 1.0)),
                self._send(v.addr, Attestation(plan_id, fake_model, ("w",), 0.0, True, "looks fine"))]

    def _unknown_plan_statement(self, v: Victim) -> list[str]:
        out = []
        for _ in range(UNKNOWN_PLAN_STATEMENTS):
            pid = self._fake_id()
            obj = self.rng.choice([Consent(pid, self.world.models["consent"], True),
                                   Bid(pid, fake_addr(self.rng), 2**40, True, 1e12, "cuda"),
                                   Heartbeat(pid, 0, 1, 1, time.time()),
                                   Result(pid, self._fake_id(), fake_addr(self.rng), "cpu", 1.0)])
            out.append(self._send(v.addr, obj))
        return out

    def _ttl_100_years(self, v: Victim) -> list[str]:
        """A plan dict whose expiry is a century away: Plan itself refuses to build it, so the
        predicate is written by hand and signed as it is."""
        recipe, inputs = self._open_recipe()
        body = self._plan(recipe, inputs).to_dict()
        body["expires"] = body["created"] + HUNDRED_YEARS_S
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        bundle = sign_statement(self.identity, "mergenet-plan", digest, PLAN_V1, body)
        return [self._send(v.addr, bundle, "plan")]

    def _oversized_message(self, v: Victim) -> list[str]:
        return [self._statement(v.addr, "plan", b"{" + b" " * OVERSIZED_BYTES + b"}"),
                self._statement(v.addr, "bid", b"{" + b" " * NEAR_LIMIT_BYTES + b"}")]

    # ---- plans that must never run -------------------------------------------------------------

    def _local_path_plan(self, v: Victim) -> list[str]:
        """Plans naming local folders (a system path, the victim's own home): by statement, and by
        Propose without the victim operator's token."""
        out = []
        m = self.world.models
        for path in ("/etc", str(v.home), str(v.home / "store"), "../../../../etc/passwd"):
            recipe = {"merge_method": "linear", "dtype": "float32",
                      "models": [{"model": path, "parameters": {"weight": 0.5}},
                                 {"model": m["expert1"], "parameters": {"weight": 0.5}}]}
            plan = self._plan(recipe, [PlanInput(m["expert1"], "expert")])
            out.append(self._send(v.addr, plan))
        out.append(self._propose_without_token(v, {"merge_method": "linear", "models": [
            {"model": "/etc", "parameters": {"weight": 1.0}}]}))
        return out

    def _self_consent_plan(self, v: Victim) -> list[str]:
        """A plan on the `consent` model that names the attacker as the one whose consent counts,
        followed by the attacker's own accept."""
        m = self.world.models
        recipe = {"merge_method": "linear", "dtype": "float32",
                  "models": [{"model": m["consent"], "parameters": {"weight": 0.5}},
                             {"model": m["expert1"], "parameters": {"weight": 0.5}}]}
        plan = self._plan(recipe, [PlanInput(m["consent"], "expert"), PlanInput(m["expert1"], "expert")],
                          consents={m["consent"]: [self.identity.key_id]})
        self.world.note_plan(plan.plan_id)
        first = self._send(v.addr, plan)
        consent = self._send(v.addr, Consent(plan.plan_id, m["consent"], True))
        return [first, f"consent {consent}" if consent in (DROPPED, STORED) else consent]

    def _rule_breaking_commit(self, v: Victim) -> list[str]:
        """A valid plan of the attacker's, three Sybil bids, and a commit that picks its executor
        against the rule (the worst-ranked bidder)."""
        recipe, inputs = self._open_recipe()
        secret = secrets.token_hex(32)
        plan = self._plan(recipe, inputs, secret=secret)
        self.world.note_plan(plan.plan_id)
        offered = self._send(v.addr, plan)
        if offered != STORED:
            return [f"plan {offered}" if offered in (DROPPED,) else offered]
        sybils = [Identity.generate() for _ in range(3)]
        self.world.note_sybils([s.key_id for s in sybils])
        bids = {s.key_id: Bid(plan.plan_id, fake_addr(self.rng), 2**40, True, 1e12, "cuda") for s in sybils}
        bundles = {k: sign(s, bids[k]) for k, s in zip(bids, sybils, strict=True)}
        order = sorted(bids, key=lambda k: rules.rank(plan.plan_id, k, secret))
        worst, others = order[-1], order[:-1]
        commit = Commit(plan.plan_id, Member(worst, bids[worst].address),
                        tuple(Member(k, bids[k].address) for k in others[:plan.verification.verifiers]),
                        0, tuple(bundles.values()), secret, ())
        answer = self._send(v.addr, commit)
        return [f"commit {answer}" if answer in (DROPPED, STORED) else answer]

    def _sybil_bids(self, v: Victim) -> list[str]:
        """Twenty throwaway keys bid on an honest plan with enormous claimed capacity, at fake
        addresses or at a live honest node's address."""
        deadline = time.monotonic() + SYBIL_WAIT_S
        plans: list[dict[str, Any]] = []
        # Bidding lasts ~1.5 s: watch the victims' lists for a plan still taking bids.
        while not plans and time.monotonic() < deadline and not self.stopping.is_set():
            plans = [d for x in self.world.victims() for d in self._honest_plans(x.addr, ("consenting", "bidding"))]
            time.sleep(0.1)
        if not plans:
            return ["no honest plan in bidding"]
        doc = self.rng.choice(plans)
        target = doc["proposer"]["address"]  # the proposer commits: that is where bids matter
        live = [x.addr for x in self.world.victims()]
        sybils = [Identity.generate() for _ in range(SYBILS)]
        self.world.note_sybils([s.key_id for s in sybils])
        out = []
        for s in sybils:
            addr = self.rng.choice(live) if live and self.rng.random() < 0.3 else fake_addr(self.rng)
            answer = self._send(target, sign(s, Bid(doc["plan_id"], addr, 2**50, True, 1e12, "cuda")), "bid")
            out.append("bid stored" if answer == STORED else answer)
        return out

    # ---- operator-only calls ---------------------------------------------------------------------

    def _propose_without_token(self, v: Victim, recipe: dict[str, Any]) -> str:
        metadata = ((TOKEN_METADATA_KEY, secrets.token_hex(32)),) if self.rng.random() < 0.5 else ()
        with self._channel(v.addr) as ch:
            try:
                pb_grpc.PlansStub(ch).Propose(pb.ProposeRequest(recipe_json=json.dumps(recipe), verifiers=1,
                                                                spot_check=1.0, ttl_s=60),
                                              timeout=CALL_TIMEOUT_S, metadata=metadata)
            except grpc.RpcError as exc:
                return code_of(exc)
        return "proposed"

    def _operator_rpc(self, v: Victim) -> list[str]:
        """Make the victim sign for its operator: propose, consent (Decide) and Notify, with no
        token or a guessed one."""
        m = self.world.models
        out = [self._propose_without_token(v, {"merge_method": "linear", "models": [
            {"model": m["expert1"], "parameters": {"weight": 1.0}}]})]
        plans = self._honest_plans(v.addr) or [{"plan_id": self._fake_id()}]
        with self._channel(v.addr) as ch:
            calls = [lambda: pb_grpc.PlansStub(ch).Decide(
                         pb.DecideRequest(plan_id=self.rng.choice(plans)["plan_id"], model_id=m["consent"],
                                          accept=True), timeout=CALL_TIMEOUT_S),
                     lambda: pb_grpc.RegistryStub(ch).Notify(pb.NotifyRequest(model_ids=[m["expert1"]]),
                                                             timeout=CALL_TIMEOUT_S)]
            for call in calls:
                try:
                    call()
                    out.append("answered")
                except grpc.RpcError as exc:
                    out.append(code_of(exc))
        return out

    # ---- transport and gossip -------------------------------------------------------------------

    def _stream_flood(self, v: Victim) -> list[str]:
        """16 Fetch streams of the victim's largest blob, each on its own connection with a
        window too small for one chunk, never read; held a few seconds, then dropped."""
        digest = self._largest_blob(v.addr)
        if digest is None:
            return ["no blob to ask for"]
        unread = (("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0),
                  ("grpc.http2.lookahead_bytes", 64 * 1024))
        channels = [self._channel(v.addr, options=unread) for _ in range(FLOOD_STREAMS)]
        calls = [pb_grpc.TransferStub(ch).Fetch(pb.FetchRequest(digest=digest)) for ch in channels]
        try:
            self.stopping.wait(STREAM_HOLD_S)
            out = []
            for call in calls:
                if call.is_active():
                    out.append("held (within the per-client cap)")
                else:
                    code = call.code()
                    out.append("victim down" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                               else code.name)
            held = out.count("held (within the per-client cap)")
            if held > MAX_FETCH_STREAMS_PER_CLIENT:
                out = [f"{held} streams held, over the per-client cap"]
            return out
        finally:
            for call in calls:
                call.cancel()
            for ch in channels:
                ch.close()

    def _largest_blob(self, addr: str) -> str | None:
        with self._channel(addr) as ch:
            try:
                info = pb_grpc.RegistryStub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=CALL_TIMEOUT_S)
                if not info.model_ids:
                    return None
                ad = pb_grpc.RegistryStub(ch).GetManifest(
                    pb.GetManifestRequest(model_id=self.rng.choice(list(info.model_ids))), timeout=CALL_TIMEOUT_S)
            except grpc.RpcError:
                return None
        files = sorted(ad.files, key=lambda f: f.size)
        return files[-1].sha256 if files else None

    def _announce(self, stub: Any, sender: str, known: Sequence[str] = (), leaving: bool = False) -> str:
        try:
            stub.Announce(pb.AnnounceRequest(sender=pb.PeerInfo(grpc_addr=sender), leaving=leaving,
                                             known=[pb.PeerInfo(grpc_addr=k) for k in known]),
                          timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return code_of(exc)
        return "OK"

    def _peer_flood(self, v: Victim) -> list[str]:
        """Thousands of fake peer addresses gossiped in batches, then: is the table still bounded?"""
        with self._channel(v.addr) as ch:
            stub = pb_grpc.RegistryStub(ch)
            out = []
            for _ in range(PEER_FLOOD_CALLS):
                fakes = [fake_addr(self.rng) for _ in range(FAKE_PEERS_PER_ANNOUNCE)]
                out.append(self._announce(stub, fake_addr(self.rng), fakes))
            try:
                count = stub.GetNetworkInfo(pb.NetworkInfoRequest(), timeout=CALL_TIMEOUT_S).peer_count
            except grpc.RpcError as exc:
                return [*out, code_of(exc)]
        out.append("peer table bounded" if count <= MAX_PEERS else f"peer table holds {count} > {MAX_PEERS}")
        return out

    def _holds(self, addr: str, model_id: str, holder: str) -> bool | None:
        with self._channel(addr) as ch:
            try:
                reply = pb_grpc.RegistryStub(ch).FindHolders(pb.FindHoldersRequest(model_id=model_id),
                                                             timeout=CALL_TIMEOUT_S)
            except grpc.RpcError:
                return None
        return holder in reply.holders

    def _forged_goodbye(self, v: Victim) -> list[str]:
        """A goodbye in a live honest peer's name; once the victim's checks are done, the peer
        must still be listed as a holder of the model it submitted."""
        owners = self.world.owners
        others = [x for x in self.world.victims() if x.addr != v.addr and x.name in owners]
        if not others:
            return ["inconclusive"]
        named = self.rng.choice(others)
        model_id = self.world.models[owners[named.name]]
        if not self._holds(v.addr, model_id, named.addr):
            return ["inconclusive"]  # the victim had not heard of it as a holder yet
        before = (self.world.incarnation(v.name), self.world.incarnation(named.name))
        with self._channel(v.addr) as ch:
            sent = self._announce(pb_grpc.RegistryStub(ch), named.addr, leaving=True)
        if sent != "OK":
            return [sent]
        if self.stopping.wait(GOODBYE_CHECK_S):
            return ["inconclusive"]
        still = self._holds(v.addr, model_id, named.addr)
        after = (self.world.incarnation(v.name), self.world.incarnation(named.name))
        if before != after or still is None or not _answers(named.addr):
            return ["inconclusive"]  # the chaos loop killed one of them meanwhile
        return ["goodbye ignored (holder still listed)" if still else "goodbye honoured for a live peer"]

    def _ad_fake_senders(self, v: Victim) -> list[str]:
        """A genuine ad copied from its holder, re-sent under many fake senders; the victim's
        holder list for the model must stay capped."""
        holders = [x for x in self.world.victims() if x.name in self.world.owners]
        if not holders:
            return ["no ad to copy"]
        owner = self.rng.choice(holders)
        model_id = self.world.models[self.world.owners[owner.name]]
        with self._channel(owner.addr) as ch:
            try:
                ad = pb_grpc.RegistryStub(ch).GetManifest(pb.GetManifestRequest(model_id=model_id),
                                                          timeout=CALL_TIMEOUT_S)
            except grpc.RpcError:
                return ["no ad to copy"]
        out = []
        with self._channel(v.addr) as ch:
            stub = pb_grpc.RegistryStub(ch)
            for _ in range(FAKE_AD_SENDERS):
                try:
                    reply = stub.Advertise(pb.AdvertiseRequest(sender=pb.PeerInfo(grpc_addr=fake_addr(self.rng)),
                                                               models=[ad]), timeout=CALL_TIMEOUT_S)
                    out.append("accepted" if reply.accepted else "rejected")
                except grpc.RpcError as exc:
                    out.append(code_of(exc))
                    if out[-1] == "RESOURCE_EXHAUSTED":
                        break
            try:
                listed = stub.FindHolders(pb.FindHoldersRequest(model_id=model_id), timeout=CALL_TIMEOUT_S).holders
            except grpc.RpcError as exc:
                return [*out, code_of(exc)]
        out.append("holders capped" if len(listed) <= MAX_HOLDERS_LISTED else f"{len(listed)} holders listed")
        return out


def _answers(addr: str) -> bool:
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            return False
    return True
