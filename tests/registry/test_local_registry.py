"""The LocalRegistry facade and the listing commands: submit, get, list, materialize, ingest."""

from __future__ import annotations

import json
import shutil

import pytest

from registry.errors import BadModelError, VerificationError
from registry.ids import ModelId, PlanId
from registry.local import LocalRegistry
from registry.provenance import InputRef, Provenance
from registry.statements import ATTESTATION_V1, CONSENT_V1, sign_statement
from tests.registry.registry_helpers import one_line_error


def test_manifest_fields_and_fingerprints(model_copy, home):
    reg = LocalRegistry(home)
    base = reg.submit(model_copy("llama", 0), license="Apache-2.0", tags=("base",))
    rec = reg.submit(model_copy("llama", 1), base=base.id[:12], tags=("math", "en"), policy="consent",
                     eval_scores={"arith": 0.5}, name="math-expert")
    m = rec.manifest
    assert (m.kind, m.name, m.model_type, m.policy, m.tags) == ("expert", "math-expert", "llama", "consent",
                                                                  ("math", "en"))
    assert m.base_model == base.id and m.eval_scores == {"arith": 0.5}
    assert m.architecture_fingerprint == base.manifest.architecture_fingerprint
    assert m.tokenizer_fingerprint == base.manifest.tokenizer_fingerprint is not None
    assert m.publisher_key_id == reg.identity().key_id == rec.signer
    assert set(m.tensors["model.safetensors"]) and all(len(d) == 64 for d in m.tensors["model.safetensors"].values())
    gpt2 = reg.submit(model_copy("gpt2", 1))
    assert gpt2.manifest.architecture_fingerprint != m.architecture_fingerprint
    assert [r.id for r in reg.list(kind="expert")] == [base.id, rec.id, gpt2.id]
    reg.close()


def test_resubmit_unchanged_folder_keeps_id_and_changed_folder_gets_new_one(model_copy, home):
    reg = LocalRegistry(home)
    folder = model_copy("qwen2", 1)
    first = reg.submit(folder)
    assert reg.submit(folder).id == first.id
    (folder / "README.md").write_text("now with a card\n")
    second = reg.submit(folder)
    assert second.id != first.id and "README.md" in second.files
    assert reg.verify(folder).id == second.id
    assert len(reg.list()) == 2


def test_merged_model_with_provenance(model_copy, home):
    reg = LocalRegistry(home)
    expert = ModelId("sha256:" + "2" * 64)
    prov = Provenance(method="ties", recipe={"merge_method": "ties"}, inputs=(InputRef("expert", expert, expert),),
                      device="cpu", mergenet_version="0.1.0", plan_id=PlanId("sha256:" + "1" * 64),
                      executor=reg.identity().key_id)
    rec = reg.submit(model_copy("gpt2", 1), kind="merged", provenance=prov)
    assert rec.kind == "merged" and rec.manifest.provenance == prov.to_dict()
    assert rec.manifest.provenance["inputs"] == [expert] and rec.manifest.provenance["plan_id"] == prov.plan_id
    assert Provenance.from_dict(rec.manifest.provenance) == prov  # what verifiers parse back
    assert [r.id for r in reg.list(kind="merged")] == [rec.id]


def test_provenance_from_a_peer_is_checked_field_by_field():
    good = Provenance(method="fusion", recipe={}, inputs=(InputRef("target", "t"),), device="cpu",
                      data_sha256="ab" * 32, train_examples=3).to_dict()
    assert Provenance.from_dict(good).is_fusion
    for bad in (None, [], {**good, "method": 1}, {**good, "input_roles": "x"},
                {**good, "input_roles": [{"role": "boss", "ref": "t"}]}, {**good, "plan_id": "sha256:xyz"},
                {**good, "input_roles": [{"role": "base", "ref": "t", "id": "not-an-id"}]}, {**good, "recipe": 3}):
        with pytest.raises(BadModelError):
            Provenance.from_dict(bad)


def test_sharded_model_with_subfolders(model_copy, home, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = model_copy("llama", 1)
    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    (folder / "model.safetensors").unlink()
    half = len(names) // 2
    save_file({n: tensors[n] for n in names[:half]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[half:]}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "extra").mkdir()
    save_file({"adapter": torch.ones(4)}, str(folder / "extra" / "adapter.safetensors"))
    reg = LocalRegistry(home)
    rec = reg.submit(folder)
    assert set(rec.manifest.tensors) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                         "extra/adapter.safetensors"}
    out = reg.materialize(rec.id, tmp_path / "out")
    assert (out / "extra" / "adapter.safetensors").is_file()
    assert reg.verify(out, deep=True).id == rec.id


def test_materialize_is_atomic_and_refuses_non_empty_target(submitted, home, tmp_path):
    folder, model_id = submitted
    reg = LocalRegistry(home)
    out = reg.materialize(model_id[:14], tmp_path / "pulled" / "copy")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert reg.verify(out).id == model_id
    (out / "config.json").write_text("{}")  # the copy is writable, not a link into the store
    with pytest.raises(BadModelError, match="not empty"):
        reg.materialize(model_id, out)

    # a corrupted blob: nothing becomes visible and no temp folder is left behind
    sha = reg.get(model_id).files["model.safetensors"][0]
    blob = reg.blob_path(sha)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"model\.safetensors"):
        reg.materialize(model_id, tmp_path / "pulled" / "second")
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == ["copy"]


def test_ingest_foreign_folder_keeps_publisher_signature(submitted, other_home, home, tmp_path):
    folder, model_id = submitted
    original_sig = (folder / "model.sig").read_bytes()
    theirs = LocalRegistry(other_home)
    rec = theirs.ingest(shutil.copytree(folder, tmp_path / "received"))
    assert rec.id == model_id and rec.signer == LocalRegistry(home).identity().key_id
    assert rec.signature == original_sig and rec.signer != theirs.identity().key_id
    assert theirs.verify(model_id).id == model_id
    assert not theirs.verify(model_id).trusted


def test_ingest_from_store_after_committing_partials(submitted, other_home, home):
    folder, model_id = submitted
    mine = LocalRegistry(home).get(model_id)
    theirs = LocalRegistry(other_home)
    for rel, (sha, _) in mine.files.items():
        theirs.store.partial_path(sha).write_bytes((folder / rel).read_bytes())
        theirs.store.commit_partial(sha)
    rec = theirs.ingest_from_store(mine.signature, list(mine.files))
    assert rec.id == model_id and rec.files == mine.files


def test_ingest_from_store_refuses_missing_blobs(submitted, other_home, home):
    _, model_id = submitted
    mine = LocalRegistry(home).get(model_id)
    with pytest.raises(VerificationError, match="not in the store"):
        LocalRegistry(other_home).ingest_from_store(mine.signature, list(mine.files))


def test_attestations_are_verified_and_shown(submitted, home, cli):
    from registry.identity import Identity

    _, model_id = submitted
    reg = LocalRegistry(home)
    verifier = Identity.generate()
    att = sign_statement(verifier, model_id, model_id, ATTESTATION_V1, {"tensors_checked": 12, "max_abs_err": 0.0})
    assert reg.add_attestation(model_id, att).key_id == verifier.key_id
    with pytest.raises(VerificationError):
        reg.add_attestation(model_id, sign_statement(verifier, model_id, model_id, CONSENT_V1, {}))
    other = "sha256:" + "c" * 64
    with pytest.raises(VerificationError, match="not"):
        reg.add_attestation(model_id, sign_statement(verifier, other, other, ATTESTATION_V1, {}))
    shown = json.loads(cli("show", model_id, "--json").out)
    assert len(shown["attestations"]) == 1 and shown["attestations"][0]["publicKeyPem"]


def test_ls_and_show_report_trust(submitted, cli, other_home, home):
    _, model_id = submitted
    rows = json.loads(cli("ls", "--json").out)["models"]
    assert [(r["id"], r["signer_trusted"]) for r in rows] == [(model_id, True)]
    assert "trusted" in cli("ls").out

    LocalRegistry(other_home).ingest(submitted[0])
    rows = json.loads(cli("ls", "--json", home_dir=other_home).out)["models"]
    assert rows[0]["signer_trusted"] is False
    key_id = rows[0]["signer"]
    assert cli("trust", "add", key_id, home_dir=other_home).code == 0
    assert json.loads(cli("trust", "ls", "--json", home_dir=other_home).out)["keys"][0]["key_id"] == key_id
    shown = json.loads(cli("show", model_id[:12], "--json", home_dir=other_home).out)
    assert shown["signer_trusted"] is True and shown["manifest"]["publisher"]["key_id"] == key_id
    assert cli("trust", "rm", key_id[:10], home_dir=other_home).code == 0
    assert json.loads(cli("ls", "--json", home_dir=other_home).out)["models"][0]["signer_trusted"] is False
    res = cli("trust", "rm", key_id, home_dir=other_home)
    assert res.code == 2 and key_id in one_line_error(res.err)


def test_show_unknown_id_is_not_found(cli, monkeypatch):
    monkeypatch.setenv("MERGENET_NODE", "127.0.0.1:9")  # nothing listens there
    res = cli("show", "sha256:" + "d" * 64)
    assert res.code == 2 and "d" * 16 in one_line_error(res.err)


def test_submit_flags_are_validated(model_copy, cli):
    folder = model_copy("llama", 1)
    res = cli("submit", folder, "--license", "not a license!")
    assert res.code == 2 and "license" in one_line_error(res.err)
    res = cli("submit", folder, "--base", "sha256:1234")
    assert res.code == 2 and "1234" in one_line_error(res.err)
    assert not (folder / "model.sig").exists()
    res = cli("submit", folder, "--base", model_copy("llama", 0))
    assert res.code == 2 and "not a signed model" in one_line_error(res.err)


def test_submit_json_output(model_copy, cli):
    res = cli("submit", model_copy("gpt2", 1), "--tags", "a, b,,c", "--license", "MIT", "--json")
    data = json.loads(res.out)
    assert data["id"].startswith("sha256:") and data["manifest"]["tags"] == ["a", "b", "c"]
    assert data["manifest"]["license"] == "MIT" and data["node_notified"] is False
    assert cli("ls", "--kind", "merged", "--json").out.count("sha256:") == 0
