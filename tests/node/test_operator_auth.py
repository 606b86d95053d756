"""Only a node's operator (the token in its home) may make it propose, consent or advertise.

A stranger's Propose, Decide and Notify get PERMISSION_DENIED and change nothing (no plan
stored, no consent signed, no model advertised); the same calls with the home's token work, the
CLI from the node's own home works, the CLI of another home gets one clear sentence, and a token
file that other users can read is replaced at start and refused by clients.
"""

from __future__ import annotations

import json
import os
import stat
import time

import grpc
import pytest

from node.errors import NodeError
from node.network.client import connect, operator_metadata, registry_stub
from node.network.remote import list_remote
from node.plans.model import Plan, PlanInput, VerificationPolicy, canonical_json
from node.plans.signing import sign
from node.process.auth import OPERATOR_METHODS, TOKEN_FILE, TOKEN_METADATA_KEY, read_token
from node.process.config import NodeConfig
from node.process.daemon import Node
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.identity import Identity
from registry.local import LocalRegistry

pytestmark = pytest.mark.timeout(120)
WRONG = ((TOKEN_METADATA_KEY, "not-the-token"),)


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def submit(home, folder, **kw) -> str:
    reg = LocalRegistry(home)
    try:
        return reg.submit(folder, **kw).id
    finally:
        reg.close()


@pytest.fixture
def start(tmp_path):
    started = []

    def make(name: str, *peers: str) -> Node:
        node = Node(NodeConfig(home=tmp_path / name, listen="127.0.0.1:0", dht=False, peers=peers))
        node.start()
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def publisher(start, model_copy, tmp_path):
    """A node with consent policy `manual` holding a base and an expert of policy `consent`."""
    home = tmp_path / "pub"
    home.mkdir()
    (home / "consent_policy").write_text("manual\n")
    base = submit(home, model_copy("llama", 0), license="MIT")
    expert = submit(home, model_copy("llama", 1), base=base, license="MIT", policy="consent")
    recipe = {"merge_method": "ties", "base_model": base, "dtype": "float32", "parameters": {"normalize": True},
              "models": [{"model": expert, "parameters": {"weight": 1.0, "density": 0.5}}]}
    return start("pub"), base, expert, recipe


def propose_request(recipe) -> pb.ProposeRequest:
    return pb.ProposeRequest(recipe_json=json.dumps(recipe), verifiers=1, spot_check=0.25, tolerance=1e-4)


def call(addr: str, method: str, request, metadata=()):
    with connect(addr) as ch:
        stub = registry_stub(ch) if method == "Notify" else pb_grpc.PlansStub(ch)
        return getattr(stub, method)(request, timeout=10, metadata=metadata)


def denied(addr: str, method: str, request, metadata=()) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(addr, method, request, metadata)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return err.value.details()


def offer_needing_consent(node: Node, base: str, expert: str, recipe) -> str:
    """Mallory offers a plan that reads the publisher's consent-policy expert; it waits for a decision."""
    mallory = Identity.generate()
    plan = Plan.new(proposer=mallory.key_id, proposer_address=node.addr, recipe=recipe, license="MIT",
                    inputs=[PlanInput(base, "base"), PlanInput(expert, "expert")],
                    consents_needed={expert: node.plans.engine.me}, verification=VerificationPolicy(1, 0.25, 1e-4))
    assert call(node.addr, "Offer", pb.PlanStatement(bundle=canonical_json(sign(mallory, plan)))).accepted
    return plan.plan_id


def test_the_token_is_issued_at_start_owner_only_and_replaces_a_loose_file(tmp_path, start):
    home = tmp_path / "n"
    home.mkdir()
    stale = home / TOKEN_FILE
    stale.write_text("leaked-token\n")
    stale.chmod(0o644)
    node = start("n")
    mode = stat.S_IMODE(os.stat(home / TOKEN_FILE).st_mode)
    token = read_token(home)
    assert mode == 0o600 and token != "leaked-token" and len(token) >= 40
    # The old value opens nothing, and a file others can read is refused rather than sent.
    denied(node.addr, "Propose", pb.ProposeRequest(), ((TOKEN_METADATA_KEY, "leaked-token"),))
    (home / TOKEN_FILE).chmod(0o644)
    with pytest.raises(NodeError, match="mode 0644"):
        operator_metadata(home)


def test_strangers_cannot_propose_and_the_operator_can(publisher):
    node, _, _, recipe = publisher
    store = node.plans.engine.store
    for metadata in ((), WRONG):
        detail = denied(node.addr, "Propose", propose_request(recipe), metadata)
        assert detail == "this node accepts plan proposals only from its operator (the token in its home)"
        # Garbage is refused the same way: the request is never parsed.
        denied(node.addr, "Propose", pb.ProposeRequest(recipe_json="{not json"), metadata)
    assert store.list() == []
    plan_id = call(node.addr, "Propose", propose_request(recipe), operator_metadata(node.home.root)).plan_id
    assert [r.plan_id for r in store.list()] == [plan_id]
    # Status and List stay open: plans are flooded to every peer anyway.
    doc = json.loads(call(node.addr, "Status", pb.PlanStatusRequest(plan_id=plan_id)).status_json)
    assert doc["plan_id"] == plan_id


def test_a_stranger_cannot_consent_for_a_manual_publisher(publisher):
    node, base, expert, recipe = publisher
    plan_id = offer_needing_consent(node, base, expert, recipe)
    store = node.plans.engine.store
    assert store.get(plan_id).state == "consenting"
    for metadata in ((), WRONG):
        denied(node.addr, "Decide", pb.DecideRequest(plan_id=plan_id, model_id=expert, accept=True), metadata)
    assert store.get(plan_id).consents == {}
    call(node.addr, "Decide", pb.DecideRequest(plan_id=plan_id, model_id=expert, accept=False, reason="no"),
         operator_metadata(node.home.root))
    consent = store.get(plan_id).consents[f"{expert}|{node.plans.engine.me}"]
    assert consent.signer == node.plans.engine.me and consent.body.accept is False


def test_a_stranger_cannot_make_the_node_advertise(start, model_copy):
    a = start("a")
    b = start("b", a.addr)
    wait_for(lambda: b.addr in a.network.peers.good())
    time.sleep(1.0)  # let the join's announce rounds finish before the new model exists
    model_id = submit(a.home.root, model_copy("llama", 1), license="MIT")
    for metadata in ((), WRONG):
        denied(a.addr, "Notify", pb.NotifyRequest(model_ids=[model_id]), metadata)
    time.sleep(2.0)  # an announce round takes milliseconds; the next periodic one is a minute away
    assert model_id not in {m["id"] for m in list_remote(b.addr) if not m["local"]}
    assert call(a.addr, "Notify", pb.NotifyRequest(model_ids=[model_id]), operator_metadata(a.home.root)).known == 1
    wait_for(lambda: model_id in {m["id"] for m in list_remote(b.addr)})


def test_the_cli_of_the_nodes_home_works_and_another_homes_cli_is_refused(publisher, start, cli, tmp_path):
    node, base, expert, recipe = publisher
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    other = start("other")
    for home in (tmp_path / "stranger", other.home.root):  # no node at all, or a node of its own
        home.mkdir(exist_ok=True)
        r = cli("plan", "propose", path, "--node", node.addr, home_dir=home)
        assert r.code == 1 and r.err.count("\n") == 1, r.err
        assert f"the node at {node.addr} refused" in r.err and "only from its operator" in r.err
    assert node.plans.engine.store.list() == []

    r = cli("plan", "propose", path, "--node", node.addr, "--json", home_dir=node.home.root)
    assert r.code == 0, r.err
    assert [p.plan_id for p in node.plans.engine.store.list()] == [json.loads(r.out)["plan_id"]]

    plan_id = offer_needing_consent(node, base, expert, recipe)
    r = cli("plan", "consent", plan_id, expert, "--accept", "--node", node.addr, home_dir=other.home.root)
    assert r.code == 1 and "consent decisions only from its operator" in r.err
    assert node.plans.engine.store.get(plan_id).consents == {}
    r = cli("plan", "consent", plan_id, expert, "--accept", home_dir=node.home.root)  # node.json finds the node
    assert r.code == 0, r.err
    assert node.plans.engine.store.get(plan_id).consents[f"{expert}|{node.plans.engine.me}"].body.accept is True


def test_the_cli_sends_the_token_only_to_its_own_node_and_never_a_loose_one(publisher, start, cli, tmp_path,
                                                                            model_copy):
    from node.cli.context import Context

    node, _, _, recipe = publisher
    other = start("other")
    mine = Context(node.home.root, json=False)
    assert mine.node_credential(node.addr) == operator_metadata(node.home.root)
    assert mine.node_credential(other.addr) == ()  # another home's node never learns the token

    # submit notifies the home's own node; with a token others could read, it refuses to send it.
    r = cli("submit", model_copy("llama", 1), "--json", "--node", node.addr, home_dir=node.home.root)
    assert r.code == 0 and json.loads(r.out)["node_notified"] is True, r.err
    (node.home.root / TOKEN_FILE).chmod(0o640)
    r = cli("submit", model_copy("llama", 2), "--json", "--node", node.addr, home_dir=node.home.root)
    assert r.code == 0 and json.loads(r.out)["node_notified"] is False and "refusing the operator token" in r.err
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    r = cli("plan", "propose", path, "--node", node.addr, home_dir=node.home.root)
    assert r.code == 1 and "mode 0640" in r.err and node.plans.engine.store.list() == []


def test_the_operator_methods_exist_in_the_protocol():
    """A renamed RPC must not silently fall out of the gate."""
    names = {f"/{s.full_name}/{m.name}" for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert set(OPERATOR_METHODS) <= names
