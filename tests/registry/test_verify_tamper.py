"""Signed folders verify; any changed byte, extra or missing file, edited manifest or foreign
re-signature makes `verify` exit 3 and name the file or the actual signer."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.registry.registry_helpers import one_line_error


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_submit_then_verify_folder_and_id(submitted, cli):
    folder, model_id = submitted
    by_dir = cli("verify", folder, "--json")
    assert by_dir.code == 0, by_dir.err
    assert json.loads(by_dir.out)["id"] == model_id
    by_prefix = cli("verify", model_id[:16], "--tensors", "--json")
    assert by_prefix.code == 0, by_prefix.err
    assert json.loads(by_prefix.out)["source"] == "store"


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "mergenet.json",
                                  "generation_config.json", "model.sig"])
def test_any_changed_byte_fails_and_names_the_file(name, submitted, cli, tmp_path):
    folder, _ = submitted
    copy = tmp_path / "tampered"
    shutil.copytree(folder, copy)
    flip_byte(copy / name)
    res = cli("verify", copy)
    assert res.code == 3
    assert name in one_line_error(res.err)


def test_changed_byte_at_either_end_of_weights(submitted, cli, tmp_path):
    folder, _ = submitted
    size = (folder / "model.safetensors").stat().st_size
    for i, offset in enumerate((size - 1, 9)):
        copy = shutil.copytree(folder, tmp_path / f"t{i}")
        flip_byte(copy / "model.safetensors", offset)
        res = cli("verify", copy)
        assert res.code == 3 and "model.safetensors" in one_line_error(res.err)


def test_extra_file_fails_and_is_named(submitted, cli):
    folder, _ = submitted
    (folder / "notes").mkdir()
    (folder / "notes" / "README.md").write_text("unsigned")
    res = cli("verify", folder)
    assert res.code == 3 and "notes/README.md" in one_line_error(res.err)


def test_extra_pickle_in_signed_folder_fails_verify(submitted, cli):
    folder, _ = submitted
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    res = cli("verify", folder)
    assert res.code == 3 and "pytorch_model.bin" in one_line_error(res.err)


def test_missing_file_fails_and_is_named(submitted, cli):
    folder, _ = submitted
    (folder / "tokenizer_config.json").unlink()
    res = cli("verify", folder)
    assert res.code == 3 and "tokenizer_config.json" in one_line_error(res.err)


def test_git_metadata_is_ignored_like_model_signing(submitted, cli):
    folder, model_id = submitted
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    res = cli("verify", folder, "--json")
    assert res.code == 0 and json.loads(res.out)["id"] == model_id


def test_manifest_edited_after_signing_fails(submitted, cli):
    folder, _ = submitted
    doc = json.loads((folder / "mergenet.json").read_text())
    doc["policy"] = "closed"
    doc["eval_scores"] = {"gsm8k": 0.99}
    (folder / "mergenet.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    res = cli("verify", folder)
    assert res.code == 3 and "mergenet.json" in one_line_error(res.err)


def test_manifest_publisher_swapped_fails(submitted, cli, other_home):
    """Claiming another publisher in mergenet.json without re-signing is caught by the key check."""
    folder, _ = submitted
    assert cli("keygen", home_dir=other_home).code == 0
    other_pem = (other_home / "identity" / "public_key.pem").read_text()
    from registry.identity import key_id_of

    doc = json.loads((folder / "mergenet.json").read_text())
    doc["publisher"] = {"key_id": key_id_of(other_pem), "public_key_pem": other_pem}
    (folder / "mergenet.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    res = cli("verify", folder)
    assert res.code == 3
    assert "mergenet.json" in one_line_error(res.err)


def test_resigned_by_another_key_names_actual_signer(submitted, cli, home, other_home, tmp_path):
    folder, original_id = submitted
    original_key = json.loads(cli("id", "--json").out)["key_id"]
    stolen = shutil.copytree(folder, tmp_path / "stolen")
    res = cli("submit", stolen, "--json", home_dir=other_home)
    assert res.code == 0, res.err
    thief_key = json.loads(cli("id", "--json", home_dir=other_home).out)["key_id"]
    assert thief_key != original_key

    assert cli("verify", stolen).code == 0  # internally consistent, just not by the original publisher
    res = cli("verify", stolen, "--signer", original_key)
    assert res.code == 3
    line = one_line_error(res.err)
    assert thief_key in line and original_key in line
    assert cli("verify", folder, "--signer", original_key[:12]).code == 0

    # trust list: a third party trusting only the original publisher
    third = tmp_path / "third"
    assert cli("trust", "add", home / "identity" / "public_key.pem", home_dir=third).code == 0
    assert cli("verify", folder, "--trusted-only", home_dir=third).code == 0
    res = cli("verify", stolen, "--trusted-only", home_dir=third)
    assert res.code == 3 and thief_key in one_line_error(res.err)
    assert original_id  # the original is still registered under its id


def test_tampered_blob_in_store_fails_verify_by_id(submitted, cli, home):
    _, model_id = submitted
    rec = json.loads(cli("show", model_id, "--json").out)
    blob = home / "store" / "sha256" / rec["files"]["config.json"]["sha256"][:2] / rec["files"]["config.json"]["sha256"]
    blob.chmod(0o644)
    flip_byte(blob)
    res = cli("verify", model_id)
    assert res.code == 3 and "config.json" in one_line_error(res.err)


def test_unsigned_folder_fails_verify(model_copy, cli):
    folder = model_copy("gpt2", 1)
    res = cli("verify", folder)
    assert res.code == 3 and "model.sig" in one_line_error(res.err)


def _resign_with(folder, home, manifest) -> None:
    """Write `manifest` and honestly re-sign every file, so only what the manifest claims is wrong."""
    import hashlib

    from registry.identity import Identity
    from registry.signing import sign_files

    (folder / "mergenet.json").write_bytes(manifest.to_json())
    resources = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "model.sig"}
    (folder / "model.sig").write_bytes(sign_files(Identity.load(home), folder.name, resources)[0])


def test_manifest_lying_about_architecture_fails_even_when_signed(submitted, home, cli):
    """A publisher who signs a manifest whose fingerprint does not describe the weights is caught."""
    import dataclasses

    from registry.manifest import Manifest

    folder, _ = submitted
    manifest = Manifest.from_json((folder / "mergenet.json").read_bytes())
    _resign_with(folder, home, dataclasses.replace(manifest, architecture_fingerprint="sha256:" + "0" * 64))
    res = cli("verify", folder)
    assert res.code == 3 and "architecture" in one_line_error(res.err)


def test_wrong_tensor_digest_is_caught_by_verify_tensors(submitted, home, cli):
    import dataclasses

    from registry.manifest import Manifest

    folder, _ = submitted
    manifest = Manifest.from_json((folder / "mergenet.json").read_bytes())
    digests = dict(manifest.tensors["model.safetensors"])
    victim = sorted(digests)[0]
    digests[victim] = "0" * 64
    _resign_with(folder, home, dataclasses.replace(manifest, tensors={"model.safetensors": digests}))
    assert cli("verify", folder).code == 0  # the files are what was signed ...
    res = cli("verify", folder, "--tensors")  # ... but one signed tensor digest is false
    assert res.code == 3 and victim in one_line_error(res.err)
