"""A validly signed model.sig can still be hostile: it may list paths a puller must never write
(`.git/config` runs code on the next `git` in that folder) or carry malformed JSON. Both are
verification failures (exit 3), never crashes; and submit refuses folders it cannot sign cleanly."""

from __future__ import annotations

import hashlib
import json

import pytest

from registry.dsse import sign_bundle
from registry.errors import BadModelError, VerificationError
from registry.identity import Identity
from registry.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    build_statement,
    parse_signed_resources,
    sign_files,
    verify_model_sig,
)

DIGEST = hashlib.sha256(b"x").hexdigest()


def signed(statement: dict, ident: Identity) -> bytes:
    return json.dumps(sign_bundle(ident, IN_TOTO_PAYLOAD_TYPE, json.dumps(statement).encode())).encode()


@pytest.mark.parametrize("name", [".git/config", "model.sig", "sub/.git/hooks/post-checkout", ".GIT/config",
                                  ".gitattributes"])
def test_signed_lists_of_ignored_paths_are_refused(name):
    ident = Identity.generate()
    raw = signed(build_statement("m", {"config.json": DIGEST, name: DIGEST}), ident)
    with pytest.raises(VerificationError, match="ignores"):
        verify_model_sig(raw, ident.public_pem)
    with pytest.raises(VerificationError, match="ignores"):
        parse_signed_resources(raw)
    with pytest.raises(BadModelError):
        sign_files(ident, "m", {"config.json": DIGEST, name: DIGEST})


@pytest.mark.parametrize("mutate", [
    lambda st: st["predicate"].__setitem__("serialization", []),
    lambda st: st["predicate"].__setitem__("serialization", "files"),
    lambda st: st["predicate"].__setitem__("resources", {"name": "config.json"}),
    lambda st: st["predicate"]["resources"].__setitem__(0, "config.json"),
    lambda st: st.__setitem__("subject", {"name": "m"}),
])
def test_malformed_statements_are_verification_errors(mutate):
    ident = Identity.generate()
    statement = build_statement("m", {"config.json": DIGEST})
    mutate(statement)
    with pytest.raises(VerificationError):
        verify_model_sig(signed(statement, ident), ident.public_pem)


def test_verify_cli_exits_3_on_malformed_serialization(model_copy, cli):
    folder = model_copy("llama", 1)
    assert cli("submit", folder).code == 0
    ident = Identity.generate()
    statement = json.loads(__import__("base64").b64decode(
        json.loads((folder / "model.sig").read_bytes())["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"] = []
    (folder / "model.sig").write_bytes(signed(statement, ident))
    res = cli("verify", folder)
    assert res.code == 3 and res.err.count("\n") == 1, res.err


def test_submit_refuses_non_utf8_names_and_non_file_outputs_before_writing(model_copy, cli):
    folder = model_copy("llama", 1)
    bad = folder / "notes-\udcff.txt"
    bad.write_bytes(b"x")
    res = cli("submit", folder)
    assert res.code == 2 and "UTF-8" in res.err
    assert not (folder / "mergenet.json").exists() and not (folder / "model.sig").exists()
    bad.unlink()
    (folder / "model.sig").mkdir()
    res = cli("submit", folder)
    assert res.code == 2 and "model.sig" in res.err and not (folder / "mergenet.json").exists()


def test_config_that_is_a_folder_is_bad_input(model_copy, cli):
    folder = model_copy("llama", 1)
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    res = cli("submit", folder)
    assert res.code == 2 and "config.json" in res.err


def test_deeply_nested_signed_payload_is_a_verification_error():
    ident = Identity.generate()
    payload = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    raw = json.dumps(sign_bundle(ident, IN_TOTO_PAYLOAD_TYPE, payload)).encode()
    with pytest.raises(VerificationError):
        verify_model_sig(raw, ident.public_pem)
    with pytest.raises(VerificationError):
        parse_signed_resources(raw)


def test_manifest_signs_every_file_size(model_copy, cli):
    folder = model_copy("llama", 1)
    assert cli("submit", folder).code == 0
    sizes = json.loads((folder / "mergenet.json").read_text())["sizes"]
    on_disk = {p.name: p.stat().st_size for p in folder.iterdir() if p.name not in ("mergenet.json", "model.sig")}
    assert sizes == on_disk
