"""Plans on a real network: three `mergenet node start` subprocesses on 127.0.0.1 (port 0).

An honest plan goes from `plan propose` to published with two attestations; a malicious
proposer that commits itself as executor and reports a tampered (validly signed) model is caught
by the verifiers' recomputation; forged and garbage statements over gRPC are dropped."""

from __future__ import annotations

import base64
import json
import time

import grpc
import pytest
import yaml

from node.demo.cluster import LocalCluster
from node.jobs.merge_jobs import plan_recipe
from node.network.client import connect, operator_metadata
from node.network.remote import notify_submitted
from node.plans import rules
from node.plans.model import (
    Bid,
    Commit,
    Member,
    Plan,
    PlanInput,
    Requirements,
    Result,
    VerificationPolicy,
    beacon_for,
    canonical_json,
)
from node.plans.signing import sign
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.identity import Identity
from registry.local import LocalRegistry
from registry.version import MERGENET_VERSION
from tests.node.forge import shift_tensors, submit_as_executor

pytestmark = pytest.mark.timeout(240)


def send(addr: str, method: str, bundle: dict) -> bool:
    with connect(addr) as ch:
        return getattr(pb_grpc.PlansStub(ch), method)(pb.PlanStatement(bundle=canonical_json(bundle)),
                                                      timeout=10).accepted


def status(addr: str, plan_id: str) -> dict:
    with connect(addr) as ch:
        return json.loads(pb_grpc.PlansStub(ch).Status(pb.PlanStatusRequest(plan_id=plan_id), timeout=10).status_json)


def bid_records(home, plan_id: str) -> dict:
    """bidder key → (Bid, signed bundle), from a node's stored record of the plan."""
    record = json.loads((home / "plans" / (plan_id.removeprefix("sha256:") + ".json")).read_text())
    return {key: (Bid.from_dict(s["body"]), s["bundle"]) for key, s in record["bids"].items()}


def wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    work = tmp_path_factory.mktemp("net")
    cluster = LocalCluster(work, dht=False)
    try:
        alpha = cluster.start("alpha")
        beta, gamma = cluster.start_many(["beta", "gamma"], peers=[alpha.addr])
        yield cluster, alpha, beta, gamma, work
    finally:
        assert cluster.stop() == []  # no process outlived its node


@pytest.fixture(scope="module")
def models(network, families, tmp_path_factory):
    import shutil

    _, alpha, beta, _, _ = network
    root = tmp_path_factory.mktemp("models")
    base_src, (e1_src, e2_src) = families["llama"]
    copies = [shutil.copytree(src, root / name) for src, name in ((base_src, "b"), (e1_src, "e1"), (e2_src, "e2"))]
    base = alpha.submit(copies[0], license="MIT")
    e1 = alpha.submit(copies[1], base=base, license="MIT")
    e2 = beta.submit(copies[2], base=base, license="Apache-2.0", policy="consent")
    recipe = {"merge_method": "ties", "base_model": base, "dtype": "float32", "parameters": {"normalize": True},
              "models": [{"model": e1, "parameters": {"weight": 0.5, "density": 0.5}},
                         {"model": e2, "parameters": {"weight": 0.5, "density": 0.5}}]}
    return base, e1, e2, recipe, copies


def test_plan_from_propose_to_published(network, models, cli, tmp_path):
    _, alpha, beta, gamma, _ = network
    base, e1, e2, recipe, copies = models
    path = tmp_path / "ties.yaml"
    # Models may be named by id or by signed local folder (the CLI replaces it with its id).
    by_folder = {**recipe, "models": [{**recipe["models"][0], "model": str(copies[1])}, recipe["models"][1]]}
    path.write_text(yaml.safe_dump(by_folder))
    r = cli("plan", "propose", path, "--node", gamma.addr, "--spot-check", "0.3", "--json", home_dir=gamma.home)
    assert r.code == 0, r.err
    plan_id = json.loads(r.out)["plan_id"]
    r = cli("plan", "status", plan_id[:20], "--wait", "--timeout", "120", "--node", gamma.addr, "--json",
            home_dir=gamma.home)
    doc = json.loads(r.out)
    assert r.code == 0 and doc["state"] == "published", doc["reason"]
    assert doc["license"] == "Apache-2.0 AND MIT"
    assert [i["model_id"] for i in doc["inputs"]] == [base, e1, e2]
    assert [c["accept"] for c in doc["consents"]] == [True] and doc["consents"][0]["model_id"] == e2
    assert len(doc["bids"]) == 3 and len(doc["attestations"]) == 2
    assert all(a["passed"] and a["tensors_checked"] > 0 for a in doc["attestations"])
    assert doc["executor"]["key_id"] not in {a["verifier"] for a in doc["attestations"]}
    merged = doc["result"]["model_id"]
    # Every node reaches the same end, and the merged model carries its attestations.
    for node in (alpha, beta):
        assert wait_until(lambda n=node: status(n.addr, plan_id)["state"] == "published")
    reg = LocalRegistry(gamma.home)
    try:
        assert len(reg.attestations(merged)) == 2
        manifest = reg.get(merged).manifest
        assert manifest.provenance["plan_id"] == plan_id and manifest.license == "Apache-2.0 AND MIT"
        assert len(reg.index.consents(plan_id)) == 1  # beta's signed consent is on record
    finally:
        reg.close()
    node_status = json.loads(cli("node", "status", "--node", gamma.addr, "--json", home_dir=gamma.home).out)
    assert plan_id not in [p["plan_id"] for p in node_status["plans_in_flight"]]  # published is final
    listed = cli("plan", "ls", "--node", gamma.addr, "--json", home_dir=gamma.home)
    assert plan_id in [d["plan_id"] for d in json.loads(listed.out)]
    text = cli("plan", "status", plan_id, "--node", gamma.addr, home_dir=gamma.home).out
    assert "state     published" in text and "attested  2/2" in text and merged in text
    # The publisher changing its mind after the commit comes too late to matter.
    late = cli("plan", "consent", plan_id, e2, "--reject", "--node", beta.addr, home_dir=beta.home)
    assert late.code == 0
    time.sleep(0.5)
    assert status(gamma.addr, plan_id)["state"] == "published"


def test_unknown_plans_and_bad_recipes_are_input_errors(network, cli, tmp_path):
    _, _, _, gamma, _ = network
    for args in (("status", "sha256:" + "0" * 64), ("consent", "abcd1234", "sha256:" + "1" * 64, "--accept")):
        r = cli("plan", *args, "--node", gamma.addr, home_dir=gamma.home)
        assert r.code == 2 and "matches no plan" in r.err, r.err
    path = tmp_path / "bad.yaml"
    path.write_text("merge_method: linear\nmodels:\n  - model: ./no-such-folder\n    parameters: {weight: 1.0}\n")
    r = cli("plan", "propose", path, "--node", gamma.addr, home_dir=gamma.home)
    assert r.code == 2 and "no-such-folder" in r.err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": "sha256:" + "2" * 64, "parameters": {"weight": 1.0}}]}))
    r = cli("plan", "propose", unknown, "--node", gamma.addr, home_dir=gamma.home)
    assert r.code == 2 and "2222" in r.err
    r = cli("plan", "ls", "--node", "127.0.0.1:1", home_dir=gamma.home)
    assert r.code == 1 and "no mergenet node answers" in r.err


def test_closed_model_refused_at_propose(network, models, cli, tmp_path, model_copy):
    _, alpha, _, gamma, _ = network
    base, _e1, _, recipe, _ = models
    closed = alpha.submit(model_copy("llama", 2), base=base, license="MIT", policy="closed")
    bad = {**recipe, "models": [recipe["models"][0], {"model": closed, "parameters": {"weight": 0.5}}]}
    path = tmp_path / "closed.yaml"
    path.write_text(yaml.safe_dump(bad))
    r = cli("plan", "propose", path, "--node", gamma.addr, home_dir=gamma.home)
    assert r.code == 2 and "closed" in r.err and closed in r.err


def test_malicious_executor_caught_by_verifiers(network, models, cli, tmp_path):
    _, alpha, beta, _gamma, _ = network
    base, e1, e2, recipe, _ = models
    mallory_home = tmp_path / "mallory"
    reg = LocalRegistry(mallory_home)
    mallory = reg.identity()
    reg.close()
    secret = "ab" * 32
    # Mallory's plan asks for more memory than any honest node claims, and Mallory's own bid
    # claims it: claims filter, so the rule picks Mallory — the verifiers must still catch her.
    plan = Plan.new(proposer=mallory.key_id, proposer_address=alpha.addr, recipe=recipe, license="MIT",
                    inputs=[PlanInput(base, "base"), PlanInput(e1, "expert"), PlanInput(e2, "expert")],
                    consents_needed={e2: beta.key_id}, verification=VerificationPolicy(2, 0.25, 1e-4),
                    requirements=Requirements(memory_bytes=2**50), beacon=beacon_for(secret))
    assert send(alpha.addr, "Offer", sign(mallory, plan))
    doc = wait_until(lambda: (d := status(alpha.addr, plan.plan_id))["state"] == "bidding" and len(d["bids"]) == 3
                     and d)
    # Garbage and forgeries over the wire: refused or dropped, the node keeps going.
    with connect(alpha.addr) as ch, pytest.raises(grpc.RpcError) as err:
        pb_grpc.PlansStub(ch).Commit(pb.PlanStatement(bundle=b"\x00not json"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    forged = sign(Identity.generate(), Commit(plan.plan_id, Member(beta.key_id, beta.addr), ()))
    assert not send(alpha.addr, "Commit", forged)
    broken = sign(mallory, Commit(plan.plan_id, Member(beta.key_id, beta.addr), ()))
    broken["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x30" * 70).decode()
    assert not send(alpha.addr, "Commit", broken)
    # A commit that names Mallory without her bid, or ignores the rule, is refused.
    honest = bid_records(alpha.home, plan.plan_id)  # the signed bids as alpha stored them
    others = tuple(Member(k, b.address) for k, (b, _) in honest.items())[:2]
    no_bid = Commit(plan.plan_id, Member(mallory.key_id, "127.0.0.1:1"), others, 0,
                    tuple(bundle for _, bundle in honest.values()), secret)
    assert not send(alpha.addr, "Commit", sign(mallory, no_bid))
    # Mallory commits itself by the rule and reports a validly signed but tampered merge.
    mine = Bid(plan.plan_id, "127.0.0.1:1", 2**50, False, 1.0, "cpu")
    bids = {**honest, mallory.key_id: (mine, sign(mallory, mine))}
    commit = rules.make_commit(plan, bids, secret)
    assert commit.executor.key_id == mallory.key_id
    assert send(alpha.addr, "Commit", sign(mallory, commit))
    honest_dir = tmp_path / "honest"
    from merge.executor import run_merge
    from merge.recipe import load_recipe

    folders = {}
    reg = LocalRegistry(alpha.home)
    try:
        for mid in (base, e1):
            folders[mid] = str(reg.materialize(mid, tmp_path / mid[7:19]))
    finally:
        reg.close()
    reg = LocalRegistry(beta.home)
    try:
        folders[e2] = str(reg.materialize(e2, tmp_path / e2[7:19]))
    finally:
        reg.close()
    # Every file as the honest executor writes it (the card names the ids), every tensor shifted.
    run_merge(load_recipe(recipe).with_models(folders), honest_dir, device="cpu", card_recipe=plan_recipe(plan),
              inputs={m: m for m in plan.model_ids()}, version=MERGENET_VERSION, license=plan.license)
    shift_tensors(honest_dir / "model.safetensors", 1e-2)
    reg = LocalRegistry(mallory_home)
    try:
        tampered = submit_as_executor(reg, honest_dir, plan, mallory.key_id)
    finally:
        reg.close()
    reg = LocalRegistry(alpha.home)  # alpha holds (and serves) mallory's signed folder
    try:
        reg.ingest(honest_dir)
    finally:
        reg.close()
    notify_submitted(alpha.addr, tampered, operator_metadata(alpha.home))
    assert send(alpha.addr, "Report", sign(mallory, Result(plan.plan_id, tampered, alpha.addr, "cpu", 0.1)))
    r = cli("plan", "status", plan.plan_id, "--wait", "--timeout", "120", "--node", alpha.addr, "--json",
            home_dir=alpha.home)
    doc = json.loads(r.out)
    assert r.code == 3 and doc["state"] == "failed", doc
    failing = [a for a in doc["attestations"] if not a["passed"]]
    assert failing and "tensors differ" in failing[0]["detail"] and failing[0]["max_abs_diff"] > 5e-3
    assert "rejected the result" in doc["reason"]


def test_address_challenge_proves_the_key_behind_a_bid(network):
    from node.network.peers import PeerTable
    from node.plans.transport import GrpcTransport

    _, alpha, beta, _, _ = network
    transport = GrpcTransport(PeerTable())
    try:
        assert transport.prove(alpha.addr, alpha.key_id)
        assert not transport.prove(alpha.addr, beta.key_id)  # a Sybil bidding with alpha's address
        assert not transport.prove("127.0.0.1:1", alpha.key_id)
    finally:
        transport.close()
    with connect(alpha.addr) as ch, pytest.raises(grpc.RpcError) as err:
        pb_grpc.PlansStub(ch).Prove(pb.ProveRequest(nonce=b"short"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
