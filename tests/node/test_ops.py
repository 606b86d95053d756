"""The model-operations layer: one resolver for recipe references and one provenance shape,
whether the CLI or a plan job asks for a merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from merge.recipe import load_recipe
from node.errors import NodeInputError
from node.ops.inputs import InputResolver, identify_inputs, registry_fetch
from node.ops.producing import Submission, merge_and_submit
from registry.ids import ModelId, PlanId
from registry.local import LocalRegistry
from registry.provenance import Provenance


def test_resolver_fetches_ids_and_opens_paths_only_for_the_local_user(tmp_path):
    fetched = []

    def fetch(mid: ModelId, dest: Path) -> Path:
        fetched.append((mid, dest))
        dest.mkdir(parents=True)
        return dest

    mid = "sha256:" + "ab" * 32
    local = InputResolver(fetch, tmp_path / "scratch", base_dir=tmp_path)
    assert local.folder(mid) == tmp_path / "scratch" / ("ab" * 8)
    assert local.folder(mid) == tmp_path / "scratch" / ("ab" * 8) and len(fetched) == 1  # once per reference
    (tmp_path / "models" / "x").mkdir(parents=True)  # an existing folder; else org/name is a Hugging Face name
    assert local.folder("models/x") == tmp_path / "models" / "x" and local.model_id("models/x") is None
    remote = InputResolver(fetch, tmp_path / "jobs", allow_paths=False)
    for ref in ("/etc", "models/x", "~/.ssh"):
        with pytest.raises(NodeInputError, match="not a model id"):
            remote.folder(ref)
    assert len(fetched) == 1


def test_cli_and_plan_merges_record_one_provenance_shape(families, tmp_path):
    _, experts = families["llama"]
    home = tmp_path / "home"
    reg = LocalRegistry(home)
    try:
        import shutil

        signed = reg.submit(shutil.copytree(experts[0], tmp_path / "e1"), license="MIT").id
        recipe = load_recipe({"merge_method": "linear", "dtype": "float32",
                              "models": [{"model": signed, "parameters": {"weight": 0.5}},
                                         {"model": str(experts[1]), "parameters": {"weight": 0.5}}]})
        resolver = InputResolver(registry_fetch(reg), tmp_path / "scratch", resolve_prefix=reg.resolve)
        named = identify_inputs([("expert", signed), ("expert", str(experts[1]))], resolver, reg)()
        assert named[0].id == signed and named[0].digests is None
        assert named[1].id is None and named[1].digests.startswith("model.safetensors sha256:")
        plan_id = PlanId("sha256:" + "1" * 64)
        made = merge_and_submit(recipe, tmp_path / "out", resolver, registry=reg,
                                submit=Submission(plan_id=plan_id, executor="k" * 64, license="MIT"), device="cpu")
        prov = Provenance.from_dict(reg.get(made.record.id).manifest.provenance)
    finally:
        reg.close()
    assert prov == made.provenance and prov.method == "linear" and prov.plan_id == plan_id
    assert prov.input_ids == [signed, str(experts[1])] and dict(prov.recipe) == recipe.to_dict()
    assert "mergenet" in (tmp_path / "out" / "README.md").read_text() and signed in (tmp_path / "out" /
                                                                                     "README.md").read_text()
