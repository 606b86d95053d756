"""Every bad model folder is refused through the CLI: exit 2, one stderr line naming the file
and the problem, and nothing half-written (no manifest/signature, no blobs, no index rows)."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest

from tests.registry.registry_helpers import leftovers, one_line_error, store_blobs


def safetensors_bytes(header: dict | bytes, data: bytes = b"", header_len: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}

MALFORMED = {
    "truncated-length": b"\x10\x00\x00",
    "absurd-header-length": safetensors_bytes(GOOD, bytes(16), header_len=1 << 40),
    "header-past-end": safetensors_bytes(GOOD, bytes(16), header_len=10_000),
    "bad-json": safetensors_bytes(b"{not json at all", bytes(16)),
    "not-an-object": safetensors_bytes(b"[1, 2, 3]"),
    "offsets-past-end": safetensors_bytes(GOOD, bytes(8)),
    "overlap": safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
    "unknown-dtype": safetensors_bytes({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)),
    "shape-size-mismatch": safetensors_bytes({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}},
                                             bytes(16)),
    "trailing-garbage": safetensors_bytes(GOOD, bytes(20)),
    # 65,537 zero-size tensors: a valid layout, one tensor past the per-file cap (issue 10)
    "too-many-tensors": safetensors_bytes(b"{" + b",".join(b'"t%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}'
                                                           % i for i in range(65_537)) + b"}"),
}
PROBLEM_WORDS = {
    "truncated-length": "truncated", "absurd-header-length": "absurd", "header-past-end": "truncated",
    "bad-json": "not valid JSON", "not-an-object": "not a JSON object", "offsets-past-end": "past the end",
    "overlap": "overlapping", "unknown-dtype": "unknown dtype", "shape-size-mismatch": "needs 12 bytes",
    "trailing-garbage": "trailing bytes", "too-many-tensors": "more than 65536 tensors (limit 65536 per file",
}


def assert_nothing_written(cli, home: Path, folder: Path) -> None:
    assert not (folder / "mergenet.json").exists()
    assert not (folder / "model.sig").exists()
    assert store_blobs(home) == []
    assert json.loads(cli("ls", "--json").out)["models"] == []
    assert leftovers(home, folder) == []


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_safetensors_is_refused(case, model_copy, cli, home):
    folder = model_copy("gpt2", 1)
    (folder / "extra.safetensors").write_bytes(MALFORMED[case])
    res = cli("submit", folder)
    assert res.code == 2
    line = one_line_error(res.err)
    assert "extra.safetensors" in line and PROBLEM_WORDS[case] in line, line
    assert_nothing_written(cli, home, folder)


class _Boom:
    """Unpickling this would create a file: proof that nothing is unpickled."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "sub/dir/weights.pt", "w.pth", "opt.pkl", "last.ckpt"])
def test_pickled_weights_are_refused_unopened(name, model_copy, cli, home, tmp_path):
    folder = model_copy("qwen2", 1)
    sentinel = tmp_path / "unpickled"
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pickle.dumps(_Boom(sentinel)))
    res = cli("submit", folder)
    assert res.code == 2
    line = one_line_error(res.err)
    assert name in line and "pickled" in line
    assert not sentinel.exists()
    assert_nothing_written(cli, home, folder)


def test_symlinked_file_is_refused(model_copy, cli, home, tmp_path):
    folder = model_copy("llama", 1)
    (tmp_path / "outside.json").write_text("{}")
    os.symlink(tmp_path / "outside.json", folder / "linked.json")
    res = cli("submit", folder)
    assert res.code == 2
    assert "linked.json" in one_line_error(res.err) and "symlink" in res.err
    assert_nothing_written(cli, home, folder)


def test_symlinked_directory_is_refused(model_copy, cli, home, tmp_path):
    folder = model_copy("llama", 1)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", folder / "shards")
    res = cli("submit", folder)
    assert res.code == 2
    assert "shards" in one_line_error(res.err)
    assert_nothing_written(cli, home, folder)


def test_missing_config_is_refused(model_copy, cli, home):
    folder = model_copy("llama", 1)
    (folder / "config.json").unlink()
    res = cli("submit", folder)
    assert res.code == 2 and "config.json" in one_line_error(res.err)
    assert_nothing_written(cli, home, folder)


def test_unparseable_config_is_refused(model_copy, cli, home):
    folder = model_copy("llama", 1)
    (folder / "config.json").write_text('{"model_type": "llama",')
    res = cli("submit", folder)
    assert res.code == 2 and "config.json" in one_line_error(res.err)
    assert_nothing_written(cli, home, folder)


def test_folder_without_safetensors_is_refused(model_copy, cli, home):
    folder = model_copy("llama", 1)
    (folder / "model.safetensors").unlink()
    res = cli("submit", folder)
    assert res.code == 2 and "safetensors" in one_line_error(res.err)
    assert_nothing_written(cli, home, folder)


def test_missing_folder_is_usage_error(cli, tmp_path):
    res = cli("submit", tmp_path / "nope")
    assert res.code == 2 and "nope" in one_line_error(res.err)


@pytest.mark.parametrize("bad", ["../escape.json", "/etc/passwd", "a/../../b", "a\\b", "a//b", ""])
def test_unsafe_names_are_refused(bad):
    from registry.errors import BadModelError
    from registry.folder import check_relpath

    with pytest.raises(BadModelError):
        check_relpath(bad)
    assert check_relpath("sub/dir/model-00001-of-00002.safetensors")


@pytest.mark.parametrize("bad", ["../escape.json", "/tmp/abs.json"])
def test_signature_naming_paths_outside_the_folder_fails_verify(bad, model_copy, cli, home):
    """A forged model.sig listing '..' or absolute names never makes verify read outside the folder."""
    import hashlib

    from registry.dsse import IN_TOTO_PAYLOAD_TYPE, sign_bundle
    from registry.errors import BadModelError
    from registry.identity import Identity
    from registry.signing import build_statement, sign_files

    folder = model_copy("llama", 1)
    assert cli("submit", folder).code == 0
    ident = Identity.load(home)
    resources = {"config.json": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
                 bad: hashlib.sha256(b"x").hexdigest()}
    with pytest.raises(BadModelError, match=r"inside the model folder|'\.\.'"):
        sign_files(ident, folder.name, resources)  # our own signer refuses to write such a name
    payload = json.dumps(build_statement(folder.name, resources)).encode()
    (folder / "model.sig").write_text(json.dumps(sign_bundle(ident, IN_TOTO_PAYLOAD_TYPE, payload)))
    res = cli("verify", folder)
    assert res.code == 3
    assert bad in one_line_error(res.err)
