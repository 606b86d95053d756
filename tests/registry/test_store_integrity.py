"""The content store under hostile conditions (issue 10): one writer per blob across threads and
processes, no install of bytes that are not their name, and `mergenet store check [--repair]`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from registry.errors import VerificationError
from registry.hashing import FileDigest
from registry.store import BlobStore
from tests.registry.registry_helpers import store_blobs

REPO = Path(__file__).resolve().parents[2]
CHUNKS = 16

# One downloader, as node.transfer.fetch does it: under the blob's lock, skip a blob already stored, else
# append chunks to the partial file (slowly, so writers overlap), hashing what it writes.
WRITER = """
import hashlib, sys, time
from pathlib import Path
from registry.hashing import FileDigest
from registry.store import BlobStore

def write(store, digest, data, chunks):
    with store.blob_lock(digest):
        if store.has(digest):
            return "skipped"
        part = store.partial_path(digest)
        hasher, step = hashlib.sha256(), -(-len(data) // chunks)
        with open(part, "ab") as out:
            for i in range(0, len(data), step):
                out.write(data[i:i + step]); out.flush()
                hasher.update(data[i:i + step])
                time.sleep(0.01)
        store.commit_partial(digest, hashed_as=FileDigest(hasher.hexdigest(), len(data)))
        return "written"

if __name__ == "__main__":
    root, digest, src, chunks = sys.argv[1:5]
    print(write(BlobStore(Path(root) / "store", Path(root) / "tmp"), digest, Path(src).read_bytes(), int(chunks)))
"""


def _writer():
    namespace: dict = {}
    exec(compile(WRITER, "writer", "exec"), namespace)
    return namespace["write"]


def _intact(root: Path, digest: str, data: bytes) -> None:
    store = BlobStore(root / "store", root / "tmp")
    assert store.path(digest).read_bytes() == data
    assert store.partial_digests() == [] and list((root / "store" / "partial").iterdir()) == []
    assert [p.name for p in store.blob_files()] == [digest]


def test_two_threads_and_two_stores_writing_one_blob_take_turns(tmp_path):
    data = os.urandom(CHUNKS * 4096)
    digest = hashlib.sha256(data).hexdigest()
    stores = [BlobStore(tmp_path / "store", tmp_path / "tmp") for _ in range(2)]
    write, results = _writer(), []
    threads = [threading.Thread(target=lambda s=s: results.append(write(s, digest, data, CHUNKS)))
               for s in stores * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["skipped"] * 3 + ["written"]
    _intact(tmp_path, digest, data)


def test_two_processes_writing_one_blob_take_turns(tmp_path):
    data = os.urandom(CHUNKS * 4096)
    digest = hashlib.sha256(data).hexdigest()
    src = tmp_path / "src"
    src.write_bytes(data)
    BlobStore(tmp_path / "store", tmp_path / "tmp")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), digest, str(src), str(CHUNKS)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["skipped", "written"]
    _intact(tmp_path, digest, data)


def test_a_lock_another_writer_holds_is_not_taken(tmp_path):
    store = BlobStore(tmp_path / "store", tmp_path / "tmp")
    digest = "ab" * 32
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.blob_lock(digest):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(10)
    with store.blob_lock(digest, wait=False) as held:
        assert held is False
    release.set()
    t.join(10)
    with store.blob_lock(digest, wait=False) as held, store.blob_lock(digest) as again:  # re-entrant
        assert held and again
    assert not store.lock_path(digest).exists()


def test_a_partial_that_grew_behind_the_downloader_is_not_installed(tmp_path):
    """Today's bug: each of two appenders hashed only its own bytes, so the hash each one
    computed was right while the file held both; the store installed the mix under the name."""
    store = BlobStore(tmp_path / "store", tmp_path / "tmp")
    data = os.urandom(50_000)
    digest = hashlib.sha256(data).hexdigest()
    store.partial_path(digest).write_bytes(data + data[:1000])  # a second writer's bytes appended
    with pytest.raises(VerificationError, match="another writer"):
        store.commit_partial(digest, hashed_as=FileDigest(digest, len(data)))
    assert not store.has(digest) and not store.partial_path(digest).exists()


def test_bytes_that_are_not_their_name_cannot_be_installed(tmp_path, monkeypatch):
    import registry.store as store_module

    store = BlobStore(tmp_path / "store", tmp_path / "tmp")
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    with pytest.raises(VerificationError, match="changed"):  # put_file with a digest it does not have
        store.put_file(src, digest="sha256:" + "0" * 64)
    other = hashlib.sha256(b"other").hexdigest()
    store.partial_path(other).write_bytes(b"not other")  # commit_partial re-hashing the file itself
    with pytest.raises(VerificationError, match=other):
        store.commit_partial(other)

    write = store_module._FullWriter.write

    def short_write(self, data):  # a disk that silently drops the tail of every write
        return write(self, memoryview(data)[: len(data) // 2])

    monkeypatch.setattr(store_module._FullWriter, "write", short_write)
    with pytest.raises(VerificationError, match="hashed bytes"):
        store.put_file(src)
    with pytest.raises(VerificationError, match="hashed bytes"):
        store.put_bytes(b"manifest bytes")
    assert list(store.blob_files()) == [] and list((tmp_path / "tmp").iterdir()) == []


def test_installing_a_verified_blob_replaces_a_corrupt_one_of_the_wrong_size(tmp_path):
    store = BlobStore(tmp_path / "store", tmp_path / "tmp")
    data = os.urandom(10_000)
    digest = hashlib.sha256(data).hexdigest()
    store.path(digest).parent.mkdir(parents=True)
    store.path(digest).write_bytes(data + data)
    assert store.put_bytes(data) == "sha256:" + digest
    assert store.path(digest).read_bytes() == data


def _corrupt(path: Path) -> None:
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_store_check_finds_names_and_repairs_a_corrupt_blob(submitted, cli, home):
    folder, model_id = submitted
    blobs = store_blobs(home)
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    target = next(p for p in blobs if p.name == weights)
    _corrupt(target)

    res = cli("store", "check", "--json")
    assert res.code == 3, res.err
    doc = json.loads(res.out)
    assert doc["blobs"] == len(blobs) and doc["repaired"] is False
    assert [c["digest"] for c in doc["corrupt"]] == ["sha256:" + weights]
    assert doc["corrupt"][0]["models"] == [{"id": model_id, "name": folder.name}]
    assert "--repair" in res.err
    text = cli("store", "check")
    assert text.code == 3 and model_id in text.out and folder.name in text.out
    assert cli("verify", model_id).code == 3  # the index still trusts the name; verify re-hashes

    res = cli("store", "check", "--repair", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["repaired"] is True and doc["corrupt"][0]["removed"] is True
    assert store_blobs(home) == [p for p in blobs if p != target]  # every good blob kept
    assert doc["incomplete_models"] == [{"id": model_id, "name": folder.name, "missing": ["model.safetensors"]}]

    again = cli("store", "check", "--json")
    assert again.code == 0 and json.loads(again.out)["corrupt"] == []
    res = cli("verify", model_id)
    assert res.code == 3 and "missing from the content store" in res.err and "mergenet pull" in res.err
    assert cli("submit", folder).code == 0  # the publisher's folder puts the blob back
    assert cli("verify", model_id).code == 0
    assert json.loads(cli("store", "check", "--json").out)["incomplete_models"] == []


def test_store_check_reports_a_stray_file_and_repair_removes_only_it(submitted, cli, home):
    blobs = store_blobs(home)
    stray = home / "store" / "sha256" / "zz" / "not-a-blob"
    stray.parent.mkdir()
    stray.write_bytes(b"junk")
    misplaced = home / "store" / "sha256" / "00" / blobs[0].name
    misplaced.parent.mkdir(exist_ok=True)
    misplaced.write_bytes(blobs[0].read_bytes())  # good bytes, wrong folder: no lookup ever finds it
    res = cli("store", "check", "--json")
    assert res.code == 3
    assert sorted(c["path"] for c in json.loads(res.out)["corrupt"]) == sorted([str(misplaced), str(stray)])
    assert cli("store", "check", "--repair").code == 0
    assert store_blobs(home) == blobs


def test_repair_drops_stale_partials_but_not_one_being_written(tmp_path, cli, home):
    store = BlobStore(home / "store", home / "tmp")
    stale, busy = "aa" * 32, "bb" * 32
    store.partial_path(stale).write_bytes(b"left by a crashed pull")
    store.partial_path(busy).write_bytes(b"being written")
    store.lock_path("cc" * 32).write_bytes(b"")  # a lock file whose writer died
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with store.blob_lock(busy):
            writing.set()
            done.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert writing.wait(10)
        plain = cli("store", "check", "--json")
        assert plain.code == 0 and json.loads(plain.out)["partials"] == [stale, busy]
        res = cli("store", "check", "--repair", "--json")
        assert res.code == 0 and json.loads(res.out)["removed_partials"] == [stale]
        assert store.partial_path(busy).exists() and not store.partial_path(stale).exists()
        assert not store.lock_path("cc" * 32).exists()
    finally:
        done.set()
        t.join(10)


def test_store_check_on_an_unreadable_blob_is_an_operational_error(submitted, cli, home, monkeypatch):
    import registry.store_check as store_check

    def unreadable(path, on_bytes=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store_check, "sha256_file", unreadable)
    res = cli("store", "check")
    assert res.code == 1 and "cannot read blob" in res.err
