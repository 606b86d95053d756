"""`mergenet merge` with registry ids as inputs and `--submit` of the result."""

from __future__ import annotations

import json

import yaml


def test_merge_from_ids_and_submit(cli, model_copy, home, tmp_path):
    from registry.local import LocalRegistry

    ids = []
    for index in (0, 1, 2):
        res = cli("submit", model_copy("llama", index), "--json")
        assert res.code == 0, res.err
        ids.append(json.loads(res.out)["id"])
    base_id, e1_id, e2_id = ids
    recipe = {"merge_method": "ties", "base_model": base_id, "parameters": {"density": 0.5},
              "models": [{"model": e1_id, "parameters": {"weight": 0.5}},
                         {"model": e2_id, "parameters": {"weight": 0.5}}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "merged"
    res = cli("merge", path, "-o", out, "--submit", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["id"].startswith("sha256:") and doc["tensors"] > 0
    card = (out / "README.md").read_text()
    assert e1_id in card and "/merge-inputs-" not in card  # the card records ids, not scratch folders
    reg = LocalRegistry(home)
    try:
        record = reg.get(doc["id"])
        assert record.manifest.kind == "merged"
        prov = record.manifest.provenance
        assert prov["inputs"] == [base_id, e1_id, e2_id]
        assert prov["recipe"]["base_model"] == base_id and prov["method"] == "ties"
        assert prov["device"] == "cpu"
    finally:
        reg.close()
    assert not list((home).rglob("merge-inputs-*"))  # scratch copies of the inputs are gone


def test_unknown_id_is_reported(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "linear",
                                    "models": [{"model": "sha256:" + "ab" * 32, "parameters": {"weight": 1}}]}))
    res = cli("merge", path, "-o", tmp_path / "out")
    assert res.code == 2 and "sha256:abab" in res.err
