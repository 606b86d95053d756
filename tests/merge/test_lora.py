"""`model+adapter` references: PEFT LoRA adapters applied before merging, checked against peft's
own `merge_and_unload` (what mergekit runs) and against mergekit-yaml itself; adapters submitted,
signed and named in plans as `sha256:<model>+sha256:<adapter>`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from merge.errors import MergeInputError
from merge.executor import run_merge
from merge.recipe import load_recipe

CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def make_adapter(model_dir: Path, out: Path, targets: list[str], seed: int = 0, **config) -> dict[str, torch.Tensor]:
    """Save a LoRA adapter with random A and B for `model_dir`; returns peft's merged state dict."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, **config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    peft_model.save_pretrained(str(out))
    return {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}


def applied(tmp_path: Path, ref: str) -> dict[str, torch.Tensor]:
    out = tmp_path / f"applied-{len(list(tmp_path.iterdir()))}"
    run_merge(load_recipe({"merge_method": "passthrough", "dtype": "float32", "models": [{"model": ref}]}), out,
              device="cpu")
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("arch,targets,config", [
    ("llama", ["q_proj", "v_proj", "up_proj"], {}),
    ("llama", ["q_proj", "down_proj"], {"use_rslora": True, "alpha_pattern": {"down_proj": 32}}),
    ("gpt2", ["c_attn", "c_fc"], {"fan_in_fan_out": True}),  # Conv1D: weights stored in × out
    ("llama", ["embed_tokens", "o_proj"], {}),  # an embedding LoRA (lora_embedding_A/B)
])
def test_adapter_applied_as_peft_merges_it(model_copy, tmp_path, arch, targets, config):
    model = model_copy(arch, 0)
    want = make_adapter(model, tmp_path / "adapter", targets, **config)
    got = applied(tmp_path, f"{model}+{tmp_path / 'adapter'}")
    plain = load_file(str(model / "model.safetensors"))
    changed = [k for k in got if not torch.equal(got[k], plain[k])]
    assert changed and all(any(t in k for t in targets) for k in changed)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, want[name], **CLOSE, msg=name)


def test_same_merge_as_mergekit_yaml(model_copy, tmp_path):
    base, e1 = model_copy("llama", 0), model_copy("llama", 1)
    make_adapter(base, tmp_path / "lora", ["q_proj", "gate_proj"], seed=3)
    recipe = {"merge_method": "linear", "dtype": "float32",
              "models": [{"model": f"{base}+{tmp_path / 'lora'}", "parameters": {"weight": 0.6}},
                         {"model": str(e1), "parameters": {"weight": 0.4}}]}
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump(recipe))
    code = "import sys; from mergekit.scripts.run_yaml import main; sys.exit(main())"
    res = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "theirs"),
                          "--lora-merge-cache", str(tmp_path / "cache")], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run_merge(load_recipe(recipe), tmp_path / "ours", device="cpu")
    ours, theirs = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("ours", "theirs"))
    assert set(ours) == set(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], **CLOSE, msg=name)


def test_row_pieces_leave_an_adapted_model_whole(model_copy, tmp_path, monkeypatch):
    """ΔW is computed per whole tensor, so a merge with a `model+lora` input is never split into
    row pieces (the executor asks the reader), and a row range read still matches the tensor."""
    import merge.executor as executor
    from merge.plan import plan_merge

    base, e1 = model_copy("llama", 0), model_copy("llama", 1)
    make_adapter(base, tmp_path / "lora", ["q_proj", "gate_proj"], seed=3)
    recipe = load_recipe({"merge_method": "linear", "dtype": "float32",
                          "models": [{"model": f"{base}+{tmp_path / 'lora'}", "parameters": {"weight": 0.6}},
                                     {"model": str(e1), "parameters": {"weight": 0.4}}]})
    run_merge(recipe, tmp_path / "whole", device="cpu")
    monkeypatch.setattr(executor, "PIECE_ELEMENTS", 64)
    readers: dict = {}
    plan = plan_merge(recipe, readers)
    try:
        q = next(t for t in plan.tasks if "q_proj" in t.name)
        assert executor._pieces(q, plan.method, torch.device("cpu"), readers) is None
        lora = readers[q.inputs[0].model]
        assert torch.equal(lora.get(q.inputs[0].tensor, row_range=(2, 5)), lora.get(q.inputs[0].tensor)[2:5])
    finally:
        for r in readers.values():
            r.close()
    run_merge(recipe, tmp_path / "small-pieces", device="cpu")
    a, b = ((tmp_path / d / "model.safetensors").read_bytes() for d in ("whole", "small-pieces"))
    assert a == b


def test_long_form_reference_is_the_same_input(model_copy, tmp_path):
    model = model_copy("llama", 0)
    make_adapter(model, tmp_path / "ad", ["q_proj"])
    r = load_recipe({"merge_method": "passthrough", "models": [
        {"model": {"model": {"path": str(model)}, "lora": {"path": str(tmp_path / "ad")}}}]})
    assert r.models[0].model == f"{model}+{tmp_path / 'ad'}"


def test_pickled_adapter_is_refused_unopened(model_copy, tmp_path):
    model = model_copy("llama", 0)
    make_adapter(model, tmp_path / "ad", ["q_proj"])
    (tmp_path / "ad" / "adapter_model.safetensors").unlink()
    (tmp_path / "ad" / "adapter_model.bin").write_bytes(b"\x80\x04 never unpickled")
    with pytest.raises(MergeInputError, match=r"adapter_model.bin is a pickled checkpoint and is never opened"):
        applied(tmp_path, f"{model}+{tmp_path / 'ad'}")


def test_adapter_for_another_model_and_dora_are_refused(model_copy, tmp_path):
    llama, gpt2 = model_copy("llama", 0), model_copy("gpt2", 0)
    make_adapter(gpt2, tmp_path / "g", ["c_attn"], fan_in_fan_out=True)
    with pytest.raises(MergeInputError, match=r"which model .* does not have: the adapter was trained for another"):
        applied(tmp_path, f"{llama}+{tmp_path / 'g'}")
    make_adapter(llama, tmp_path / "d", ["q_proj"], use_dora=True)
    with pytest.raises(MergeInputError, match="DoRA"):
        applied(tmp_path, f"{llama}+{tmp_path / 'd'}")
    with pytest.raises(MergeInputError, match="not a LoRA adapter folder"):
        applied(tmp_path, f"{llama}+{gpt2}")


def test_references_with_two_plus_signs_are_refused():
    from merge.errors import RecipeError

    with pytest.raises(RecipeError, match="must be MODEL or MODEL\\+ADAPTER"):
        load_recipe({"merge_method": "passthrough", "models": ["a+b+c"]})


def test_submit_an_adapter_and_merge_it_by_ids(model_copy, tmp_path, cli):
    model = model_copy("llama", 0)
    ad = tmp_path / "adapter"
    want = make_adapter(model, ad, ["q_proj"])
    assert cli("submit", ad, "--json").code == 2  # an adapter is not an expert
    sub = cli("submit", ad, "--kind", "adapter", "--json")
    assert sub.code == 0, sub.err
    adapter = json.loads(sub.out)
    assert adapter["manifest"]["kind"] == "adapter" and adapter["manifest"]["architecture"]["model_type"] == "peft-lora"
    refused = cli("submit", model, "--kind", "adapter")
    assert refused.code == 2 and "not a LoRA adapter folder" in refused.err
    base = json.loads(cli("submit", model, "--json").out)
    assert cli("verify", adapter["id"]).code == 0
    assert adapter["id"][:19] in cli("ls", "--kind", "adapter").out

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "passthrough", "dtype": "float32",
                                      "models": [{"model": f"{base['id']}+{adapter['id']}"}]}))
    res = cli("merge", recipe, "-o", tmp_path / "out", "--submit", "--json")
    assert res.code == 0, res.err
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    torch.testing.assert_close(got["model.layers.0.self_attn.q_proj.weight"],
                               want["model.layers.0.self_attn.q_proj.weight"], **CLOSE)
    roles = json.loads((tmp_path / "out" / "mergenet.json").read_text())["provenance"]["input_roles"]
    assert [(r["role"], r["id"]) for r in roles] == [("expert", base["id"]), ("adapter", adapter["id"])]


def test_plans_name_model_plus_adapter_by_ids():
    from node.plans.errors import PlanInputError
    from node.plans.model import Plan, PlanInput
    from node.plans.rules import check_references
    from node.plans.service import inputs_from_recipe

    m, a, other = ("sha256:" + c * 64 for c in "abc")
    recipe = load_recipe({"merge_method": "passthrough", "models": [f"{m}+{a}"]})
    assert [(i.model_id, i.role) for i in inputs_from_recipe(recipe)] == [(m, "expert"), (a, "expert")]

    def plan(ref: str, ids: list[str]) -> Plan:
        return Plan.new(proposer="k", proposer_address="h:1", inputs=[PlanInput(i, "expert") for i in ids],
                        recipe={"merge_method": "passthrough", "models": [ref]}, license="MIT")

    check_references(plan(f"{m}+{a}", [m, a]))
    with pytest.raises(PlanInputError, match="is not listed in the plan's inputs"):
        check_references(plan(f"{m}+{other}", [m, a]))
    with pytest.raises(PlanInputError, match="is not a model id"):
        check_references(plan(f"{m}+/tmp/adapter", [m]))
    with pytest.raises(PlanInputError, match="not used"):
        check_references(plan(m, [m, a]))


def test_adapter_folder_is_copied_nowhere(model_copy, tmp_path):
    """Applying an adapter reads both folders and writes neither."""
    model = model_copy("llama", 0)
    make_adapter(model, tmp_path / "ad", ["v_proj"])
    before = {p: p.read_bytes() for d in (model, tmp_path / "ad") for p in d.rglob("*") if p.is_file()}
    applied(tmp_path, f"{model}+{tmp_path / 'ad'}")
    assert {p: p.read_bytes() for d in (model, tmp_path / "ad") for p in d.rglob("*") if p.is_file()} == before


@pytest.mark.timeout(240)
def test_plan_with_model_plus_adapter_is_merged_and_verified(families, cli, tmp_path):
    """Three real nodes: a plan naming `sha256:<model>+sha256:<adapter>` is executed (the adapter
    fetched and applied) and its result recomputed by two verifiers."""
    from node.demo.cluster import LocalCluster

    base_src, (e1_src, _) = families["llama"]
    base, e1 = shutil.copytree(base_src, tmp_path / "b"), shutil.copytree(e1_src, tmp_path / "e1")
    want = make_adapter(base, tmp_path / "ad", ["q_proj", "o_proj"], seed=9)
    cluster = LocalCluster(tmp_path / "net", dht=False)
    try:
        alpha = cluster.start("alpha")
        beta, gamma = cluster.start_many(["beta", "gamma"], peers=[alpha.addr])
        base_id, e1_id = alpha.submit(base, license="MIT"), alpha.submit(e1, license="MIT")
        adapter_id = beta.submit(tmp_path / "ad", kind="adapter", license="MIT")
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
            {"model": f"{base_id}+{adapter_id}", "parameters": {"weight": 0.5}},
            {"model": e1_id, "parameters": {"weight": 0.5}}]}))
        r = cli("plan", "propose", recipe, "--node", gamma.addr, "--spot-check", "1.0", "--json", home_dir=gamma.home)
        assert r.code == 0, r.err
        plan_id = json.loads(r.out)["plan_id"]
        r = cli("plan", "status", plan_id, "--wait", "--timeout", "180", "--node", gamma.addr, "--json",
                home_dir=gamma.home)
        doc = json.loads(r.out)
        assert r.code == 0 and doc["state"] == "published", doc.get("reason")
        assert sorted(i["model_id"] for i in doc["inputs"]) == sorted([base_id, adapter_id, e1_id])
        assert len(doc["attestations"]) == 2 and all(a["passed"] for a in doc["attestations"])
        out = tmp_path / "pulled"
        assert cli("pull", doc["result"]["model_id"], "-o", out, home_dir=gamma.home).code == 0
        name = "model.layers.0.self_attn.q_proj.weight"
        e1_t = load_file(str(e1 / "model.safetensors"))[name]
        torch.testing.assert_close(load_file(str(out / "model.safetensors"))[name], (want[name] + e1_t) / 2, **CLOSE)
    finally:
        assert cluster.stop() == []
