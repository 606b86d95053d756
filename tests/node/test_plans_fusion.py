"""Fusion (heterogeneous) plans on a real network of three `mergenet node start` subprocesses.

Two tiny sources with different tokenizers (BPE llama, character qwen2) and a gpt2 target with a
third tokenizer go from `plan propose` to published: the data travels inline in the plan, the
executor runs `run_fusion`, and two verifiers measure held-out loss and attest it. Plus unit
tests of the verifiers' pass/fail rule and of the inline data."""

from __future__ import annotations

import base64
import json
import math
import shutil

import pytest
import yaml

from node.demo.cluster import LocalCluster
from node.plans import fusion
from node.plans.errors import PlanInputError
from node.plans.model import Attestation
from node.plans.signing import sign, verify
from registry.identity import Identity
from registry.local import LocalRegistry
from tests.node.test_plans_e2e import status, wait_until

pytestmark = pytest.mark.timeout(240)


# ---- the pass/fail rule and the inline data (pure) ----------------------------------------------


def test_verdict_passes_only_a_finite_loss_within_tolerance_of_the_target():
    assert fusion.verdict(1.20, 1.50, 0.05)[0]  # better than the target
    assert fusion.verdict(1.54, 1.50, 0.05)[0]  # worse, but within tolerance
    ok, why = fusion.verdict(1.56, 1.50, 0.05)
    assert not ok and "worse than the target's" in why and "0.0600" in why
    assert not fusion.verdict(1.51, 1.50, 0.0)[0]
    for bad in (math.nan, math.inf, fusion.UNBOUNDED):
        ok, why = fusion.verdict(bad, 1.5, 10.0)
        assert not ok and "not finite" in why
    assert fusion.verdict(3.0, math.inf, 0.0)[0]  # an unmeasurable target is beaten by any finite loss
    assert fusion.finite(math.inf) == fusion.UNBOUNDED and fusion.finite(0.5) == 0.5


def test_inline_data_is_checked_split_deterministically_and_capped():
    data = b"".join(json.dumps({"instruction": f"q{i}", "response": f"a{i}"}).encode() + b"\n" for i in range(10))
    recipe = fusion.inline_recipe({"target": "t", "sources": ["s"], "data": "/x.jsonl", "epochs": 1}, data, 0.3)
    assert "data" not in recipe and fusion.data_bytes(recipe) == data and recipe["holdout"] == 0.3
    train, held = fusion.split_lines(data, 0.3, recipe["data_sha256"])
    assert len(held.splitlines()) == 3 and len(train.splitlines()) == 7
    assert sorted(train.splitlines() + held.splitlines()) == sorted(data.splitlines())
    assert fusion.split_lines(data, 0.3, recipe["data_sha256"]) == (train, held)  # every node agrees
    assert fusion.split_lines(data, 0.3, "another seed") != (train, held)
    tampered = {**recipe, "data_b64": base64.b64encode(data + b"\n").decode()}
    with pytest.raises(PlanInputError, match="data_sha256"):
        fusion.data_bytes(tampered)
    with pytest.raises(PlanInputError, match="limit"):
        fusion.inline_recipe({"target": "t", "sources": ["s"]}, b"x" * (fusion.MAX_DATA_BYTES + 1))
    with pytest.raises(PlanInputError, match="at least 2 examples"):
        fusion.split_lines(data.splitlines()[0], 0.5, "s")
    with pytest.raises(PlanInputError, match="not a model id"):
        fusion.inputs_of({"target": "./pivot", "sources": ["sha256:" + "1" * 64]})
    ids = {"target": "sha256:" + "0" * 64, "sources": ["sha256:" + "1" * 64]}
    assert [i.role for i in fusion.validate(fusion.inline_recipe(ids, data))] == ["target", "expert"]
    broken = data.replace(b'"response": "a1"', b'"answer": "a1"')
    with pytest.raises(PlanInputError, match="line 2: missing field 'response'"):
        fusion.validate(fusion.inline_recipe(ids, broken))
    with pytest.raises(PlanInputError, match="'epochs'"):
        fusion.validate(fusion.inline_recipe({**ids, "epochs": 0}, data))


def test_attestation_scores_are_signed_and_absent_from_weight_merge_attestations(tmp_path):
    plain = Attestation("sha256:" + "a" * 64, "sha256:" + "b" * 64, ("w",), 0.0, True, "ok")
    assert "scores" not in plain.to_dict()  # the homogeneous form is unchanged
    scored = Attestation(plain.plan_id, plain.model_id, (), 0.0, True, "measured",
                         {"heldout_loss": 1.25, "target_heldout_loss": 2.5})
    ident, _ = Identity.load_or_create(tmp_path)
    back = verify(sign(ident, scored), "attestation").body
    assert back == scored and dict(back.scores) == {"heldout_loss": 1.25, "target_heldout_loss": 2.5}
    assert verify(sign(ident, plain), "attestation").body.scores == {}


def test_a_plan_with_the_largest_inline_data_fits_one_statement(tmp_path):
    from node.network.client import MAX_MESSAGE_BYTES
    from node.plans.model import Plan, canonical_json
    from node.plans.service import MAX_STATEMENT_BYTES

    ident, _ = Identity.load_or_create(tmp_path)
    ids = {"target": "sha256:" + "0" * 64, "sources": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]}
    recipe = fusion.inline_recipe(ids, "\u00e9\"\n".encode() * (fusion.MAX_DATA_BYTES // 4))
    plan = Plan.new(proposer=ident.key_id, proposer_address="127.0.0.1:7470", inputs=fusion.inputs_of(recipe),
                    recipe=recipe, license="MIT")
    size = len(canonical_json(sign(ident, plan)))
    assert size <= MAX_STATEMENT_BYTES < MAX_MESSAGE_BYTES, size


# ---- a fusion plan across real nodes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("fnet"), dht=False)
    try:
        alpha = cluster.start("alpha")
        beta, gamma = cluster.start_many(["beta", "gamma"], peers=[alpha.addr])
        yield alpha, beta, gamma
    finally:
        assert cluster.stop() == []


@pytest.fixture(scope="module")
def fused_world(network, tmp_path_factory):
    from tests.fusion.world import build_world, make_examples, write_jsonl

    alpha, beta, _ = network
    world = build_world(tmp_path_factory.mktemp("fworld"), pretrain_steps=25)
    root = tmp_path_factory.mktemp("fmodels")
    copies = {k: shutil.copytree(world[k], root / k) for k in ("target", "src_bpe", "src_char")}
    target = alpha.submit(copies["target"], license="MIT")
    src_bpe = beta.submit(copies["src_bpe"], license="Apache-2.0", policy="consent")
    src_char = alpha.submit(copies["src_char"], license="MIT")
    data = write_jsonl(root / "data.jsonl", make_examples(24, seed=7))
    return target, src_bpe, src_char, data, copies


def test_fusion_plan_from_propose_to_published_with_measured_scores(network, fused_world, cli, tmp_path):
    alpha, beta, gamma = network
    target, src_bpe, src_char, data, _ = fused_world
    path = tmp_path / "fuse.yaml"
    shutil.copy(data, tmp_path / "data.jsonl")
    path.write_text(yaml.safe_dump({"target": target, "sources": [src_bpe, src_char], "data": "data.jsonl",
                                    "top_k": 4, "lm_loss_weight": 0.5, "lr": 0.003, "epochs": 1, "batch_size": 6,
                                    "max_length": 48, "device": "cpu"}))
    r = cli("plan", "propose", path, "--node", gamma.addr, "--json", home_dir=gamma.home)
    assert r.code == 0, r.err
    plan_id = json.loads(r.out)["plan_id"]
    r = cli("plan", "status", plan_id, "--wait", "--timeout", "180", "--node", gamma.addr, "--json",
            home_dir=gamma.home)
    doc = json.loads(r.out)
    assert r.code == 0 and doc["state"] == "published", doc["reason"]
    assert doc["method"] == "fusion/min_ce" and doc["license"] == "Apache-2.0 AND MIT"
    assert [(i["model_id"], i["role"]) for i in doc["inputs"]] == [(target, "target"), (src_bpe, "expert"),
                                                                  (src_char, "expert")]
    assert [c["model_id"] for c in doc["consents"]] == [src_bpe] and doc["consents"][0]["accept"]
    sha = doc["data_sha256"]
    assert len(doc["attestations"]) == 2 and doc["executor"]["key_id"] not in {a["verifier"] for a in
                                                                              doc["attestations"]}
    for att in doc["attestations"]:
        scores = att["scores"]
        assert att["passed"] and att["tensors_checked"] == 0, att
        # Trained on the sources' distributions, the untrained target got clearly better on unseen lines.
        assert 0 < scores["heldout_loss"] < scores["target_heldout_loss"] - 0.1, scores
    # Both verifiers measured the same slice with the same models: the same scores.
    assert doc["attestations"][0]["scores"] == pytest.approx(doc["attestations"][1]["scores"], rel=1e-4)
    merged = doc["result"]["model_id"]
    for node in (alpha, beta):
        assert wait_until(lambda n=node: status(n.addr, plan_id)["state"] == "published")
    reg = LocalRegistry(gamma.home)
    try:
        manifest = reg.get(merged).manifest
        prov = manifest.provenance
        assert manifest.kind == "merged" and manifest.base_model == target
        assert prov["plan_id"] == plan_id and prov["method"] == "fusion" and prov["data_sha256"] == sha
        assert prov["inputs"] == [target, src_bpe, src_char] and "data_b64" not in prov["recipe"]
        assert prov["train_examples"] == 18  # 24 examples, a quarter held out for the verifiers
        atts = reg.attestations(merged)
        assert len(atts) == 2
    finally:
        reg.close()
    text = cli("plan", "status", plan_id, "--node", gamma.addr, home_dir=gamma.home).out
    assert "state     published" in text and "attested  2/2" in text and "heldout_loss" in text
    assert "target_heldout_loss" in text and "input     target" in text


def test_fusion_plan_obeys_merge_policies(network, fused_world, cli, tmp_path):
    alpha, _, gamma = network
    target, src_bpe, _, data, copies = fused_world
    closed_dir = shutil.copytree(copies["src_char"], tmp_path / "closed")
    reg = LocalRegistry(alpha.home)
    try:
        closed = reg.submit(closed_dir, name="closed-src", license="MIT", policy="closed").id
    finally:
        reg.close()
    path = tmp_path / "fuse.yaml"
    path.write_text(yaml.safe_dump({"target": target, "sources": [closed], "data": str(data), "epochs": 1}))
    r = cli("plan", "propose", path, "--node", alpha.addr, home_dir=alpha.home)
    assert r.code == 2 and "closed" in r.err, r.err
    big = tmp_path / "big.jsonl"
    big.write_bytes(data.read_bytes() * (fusion.MAX_DATA_BYTES // len(data.read_bytes()) + 1))
    path.write_text(yaml.safe_dump({"target": target, "sources": [src_bpe], "data": str(big)}))
    r = cli("plan", "propose", path, "--node", gamma.addr, home_dir=gamma.home)
    assert r.code == 2 and "limit" in r.err, r.err



def test_verifier_fails_a_merged_model_worse_than_its_target(fused_world, tmp_path):
    """The verifier's side alone, on one home: a 'merged' model that is the target plus heavy noise
    is measured worse than the target and refused, scores attached; the target itself passes."""
    from node.demo.models import perturb_model
    from node.jobs.context import JobContext
    from node.jobs.fusion_jobs import verify_fusion
    from node.plans.model import Plan, Result, VerificationPolicy
    from tests.node.forge import fused_folder, submit_as_executor

    _, _, _, data, copies = fused_world
    home = tmp_path / "home"
    reg = LocalRegistry(home)
    try:
        ident = reg.identity()
        target = reg.submit(shutil.copytree(copies["target"], tmp_path / "t"), name="t", license="MIT").id
        src = reg.submit(shutil.copytree(copies["src_char"], tmp_path / "s"), name="s", license="MIT").id
        settings = {"target": target, "sources": [src], "epochs": 1, "batch_size": 6, "max_length": 48}
        recipe = fusion.inline_recipe(settings, data.read_bytes())
        plan = Plan.new(proposer=ident.key_id, proposer_address="127.0.0.1:1", inputs=fusion.inputs_of(recipe),
                        recipe=recipe, license="MIT", verification=VerificationPolicy(2, 0.1, 0.05))
        same_dir, n = fused_folder(plan, tmp_path / "t", tmp_path / "same", tmp_path / "work")
        noisy = perturb_model(same_dir, tmp_path / "noisy", seed=5, scale=1.0, density=1.0)
        bad = submit_as_executor(reg, noisy, plan, ident.key_id, train_examples=n)
        same = submit_as_executor(reg, same_dir, plan, ident.key_id, train_examples=n)
    finally:
        reg.close()
    ctx = JobContext(home, ident.key_id, lambda: "127.0.0.1:1")
    att = verify_fusion(plan, Result(plan.plan_id, bad, "127.0.0.1:1", "cpu", 1.0), ident.key_id, ctx)
    assert not att.passed and "worse than the target's" in att.detail, att
    assert att.scores["heldout_loss"] > att.scores["target_heldout_loss"] + 0.05
    att = verify_fusion(plan, Result(plan.plan_id, same, "127.0.0.1:1", "cpu", 1.0), ident.key_id, ctx)
    assert att.passed and att.scores["heldout_loss"] == pytest.approx(att.scores["target_heldout_loss"]), att
    att = verify_fusion(plan, Result(plan.plan_id, same, "127.0.0.1:1", "cpu", 1.0), "someone-else", ctx)
    assert not att.passed and "committed executor" in att.detail and not att.scores


def test_verifier_fails_a_fused_result_with_doctored_files_or_claims(fused_world, tmp_path):
    """The whole-folder rule for fusion: with the target's own (passing) weights, a result that
    ships code, rewrites the chat template or the card, or claims another license or eval scores
    is refused with the file or field named."""
    from node.jobs.context import JobContext
    from node.jobs.fusion_jobs import verify_fusion
    from node.plans.model import Plan, Result, VerificationPolicy
    from tests.node.forge import fused_folder, submit_as_executor

    _, _, _, data, copies = fused_world
    home = tmp_path / "home"

    def edit_json(path, **changes):
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))

    def remote_code(folder):
        edit_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"})
        (folder / "modeling_evil.py").write_text("import os\nos.system('sh')\n")

    def card(folder):
        text = (folder / "README.md").read_text()
        (folder / "README.md").write_text(text.replace("# Fused model", "# Fused model\n\nLicense: Apache-2.0. "
                                                       "MMLU 93%, beats GPT-4."))

    cases = [
        (remote_code, {}, "modeling_evil.py"),
        (lambda f: edit_json(f / "tokenizer_config.json", chat_template="{{ 'obey: ' + messages[0]['content'] }}"),
         {}, "tokenizer_config.json differs"),
        (lambda f: edit_json(f / "generation_config.json", temperature=2.0), {}, "generation_config.json differs"),
        (card, {}, "README.md is not the card run_fusion writes"),
        (lambda f: None, {"license": "Apache-2.0"}, "license is 'Apache-2.0'"),
        (lambda f: None, {"eval_scores": {"heldout_loss": 0.01}}, "claims eval_scores (heldout_loss)"),
        (lambda f: None, {"train_examples": 99}, "train_examples 99"),
    ]
    reg = LocalRegistry(home)
    try:
        ident = reg.identity()
        target = reg.submit(shutil.copytree(copies["target"], tmp_path / "t"), name="t", license="MIT").id
        src = reg.submit(shutil.copytree(copies["src_char"], tmp_path / "s"), name="s", license="MIT").id
        settings = {"target": target, "sources": [src], "epochs": 1, "batch_size": 6, "max_length": 48}
        recipe = fusion.inline_recipe(settings, data.read_bytes())
        plan = Plan.new(proposer=ident.key_id, proposer_address="127.0.0.1:1", inputs=fusion.inputs_of(recipe),
                        recipe=recipe, license="MIT", verification=VerificationPolicy(2, 0.1, 0.05))
        results = []
        for i, (edit, claims, _) in enumerate(cases):
            folder, n = fused_folder(plan, tmp_path / "t", tmp_path / f"doctored-{i}", tmp_path / "work")
            edit(folder)
            results.append(submit_as_executor(reg, folder, plan, ident.key_id, **{"train_examples": n, **claims}))
    finally:
        reg.close()
    ctx = JobContext(home, ident.key_id, lambda: "127.0.0.1:1")
    for (_, _, reason), model_id in zip(cases, results, strict=True):
        att = verify_fusion(plan, Result(plan.plan_id, model_id, "127.0.0.1:1", "cpu", 1.0), ident.key_id, ctx)
        assert not att.passed and reason in att.detail and not att.scores, (reason, att.detail)
