"""Content store, SQLite index, hashing and the trusted-keys list."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from registry.errors import BadModelError, NotFoundError, VerificationError
from registry.hashing import hash_file, hash_files, sha256_file
from registry.index import Index, ModelRow
from registry.store import BlobStore
from registry.trust import TrustList


def test_put_is_content_addressed_deduplicated_and_read_only(tmp_path):
    store = BlobStore(tmp_path / "store", tmp_path / "tmp")
    src = tmp_path / "a.bin.data"
    src.write_bytes(os.urandom(3 << 20))
    digest = store.put_file(src)
    assert digest == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert store.has(digest) and store.size(digest) == 3 << 20
    assert store.path(digest).read_bytes() == src.read_bytes()
    assert not os.access(store.path(digest), os.W_OK) or os.geteuid() == 0
    (tmp_path / "b").write_bytes(src.read_bytes())
    assert store.put_file(tmp_path / "b") == digest
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(VerificationError, match="changed"):
        store.put_file(tmp_path / "b", digest="sha256:" + "0" * 64)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_partial_downloads_commit_only_when_the_digest_matches(tmp_path):
    store = BlobStore(tmp_path / "store", tmp_path / "tmp")
    data = os.urandom(100_000)
    digest = hashlib.sha256(data).hexdigest()
    part = store.partial_path(digest)
    assert part.name.endswith(".incomplete")
    part.write_bytes(data[:40_000])
    with open(part, "ab") as f:  # resume from where it stopped
        f.write(data[40_000:])
    assert store.commit_partial(digest).read_bytes() == data
    assert not part.exists() and store.has(digest)

    bad = hashlib.sha256(b"other").hexdigest()
    store.partial_path(bad).write_bytes(data)
    with pytest.raises(VerificationError, match=bad):
        store.commit_partial(bad)
    assert not store.has(bad) and not store.partial_path(bad).exists()


def test_per_tensor_digests_match_direct_hashing_across_buffer_boundaries(tmp_path, monkeypatch):
    import registry.hashing as hashing

    monkeypatch.setattr(hashing, "BUFFER_BYTES", 1000)  # many chunks, tensors straddling them
    data = os.urandom(10_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    ranges = [("head", 0, 8), ("a", 8, 2500), ("empty", 2500, 2500), ("b", 2500, 2999), ("c", 2999, 10_000)]
    sink = tmp_path / "copy"
    with open(sink, "wb") as f:
        got = hash_file(path, ranges, sink=f)
    assert got.sha256 == hashlib.sha256(data).hexdigest() == sha256_file(path)
    assert got.tensors == {n: hashlib.sha256(data[s:e]).hexdigest() for n, s, e in ranges}
    assert sink.read_bytes() == data


def test_hash_files_in_parallel_reports_progress(tmp_path):
    paths = {}
    for i in range(5):
        p = tmp_path / f"shard-{i}"
        p.write_bytes(os.urandom(200_000 + i))
        paths[f"shard-{i}"] = p
    seen = []
    out = hash_files(paths, workers=3, progress=lambda d, t: seen.append((d, t)))
    assert {k: v.sha256 for k, v in out.items()} == {k: hashlib.sha256(p.read_bytes()).hexdigest()
                                                     for k, p in paths.items()}
    assert seen[-1][0] == seen[-1][1] == sum(p.stat().st_size for p in paths.values())


def _row(i: int) -> ModelRow:
    return ModelRow(id=f"sha256:{i:064x}", kind="expert" if i % 2 else "merged", name=f"m{i}", manifest="{}",
                    signature=b"sig", signer="k" * 64, created="2026-01-01T00:00:00Z")


def test_index_add_get_list_resolve(tmp_path):
    index = Index(tmp_path / "r.db")
    assert index.add_model(_row(1), {"config.json": ("aa" * 32, 10)}) is True
    assert index.add_model(_row(1), {"config.json": ("aa" * 32, 10)}) is False
    index.add_model(_row(0x1200), {})
    index.add_model(_row(0x1300), {})
    assert index.get(_row(1).id).name == "m1" and index.get("sha256:" + "f" * 64) is None
    assert [r.id for r in index.list("expert")] == [_row(1).id]
    assert index.files(_row(1).id) == {"config.json": ("aa" * 32, 10)}
    assert index.resolve(_row(0x1200).id[7:]) == _row(0x1200).id
    assert index.resolve("0" * 60 + "1200") == _row(0x1200).id
    with pytest.raises(BadModelError, match="ambiguous"):
        index.resolve("0000")
    with pytest.raises(NotFoundError):
        index.resolve("ffff")
    with pytest.raises(BadModelError):
        index.resolve("xyz!")
    assert index.add_attestation(_row(1).id, {"b": 1}, "signer") is True
    assert index.add_attestation(_row(1).id, {"b": 1}, "signer") is False
    assert index.attestations(_row(1).id) == [{"b": 1}]


def test_index_is_safe_across_threads_and_connections(tmp_path):
    a, b = Index(tmp_path / "r.db"), Index(tmp_path / "r.db")

    def writer(idx: Index, start: int) -> None:
        for i in range(start, start + 25):
            idx.add_model(_row(i), {"f": (f"{i:064x}", i)})

    threads = [threading.Thread(target=writer, args=(idx, s)) for idx, s in ((a, 0), (b, 100), (a, 200))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(a.list()) == len(b.list()) == 75


def test_trust_list_add_by_pem_or_id_and_remove(tmp_path):
    from registry.identity import Identity

    ident = Identity.generate()
    trust = TrustList(tmp_path / "trust.json")
    assert trust.add(ident.public_pem) == ident.key_id
    assert trust.contains(ident.key_id) and trust.public_pem(ident.key_id) == ident.public_pem
    other = "ab" * 32
    assert trust.add(other.upper()) == other and trust.public_pem(other) is None
    assert [k.key_id for k in trust.list()] == sorted([ident.key_id, other])
    assert trust.remove(ident.key_id[:10]) == ident.key_id
    assert not trust.contains(ident.key_id)
    with pytest.raises(NotFoundError):
        trust.remove(ident.key_id)
    with pytest.raises(BadModelError):
        trust.add("not a key")


def test_fan_out_propagates_a_failing_consumer_without_hanging(tmp_path, monkeypatch):
    import registry.hashing as hashing

    monkeypatch.setattr(hashing, "BUFFER_BYTES", 1000)
    path = tmp_path / "f"
    path.write_bytes(os.urandom(50_000))

    class DiskFull:
        def __init__(self):
            self.calls = 0

        def write(self, data):
            self.calls += 1
            if self.calls == 3:
                raise OSError(28, "No space left on device")
            return len(data)

    sink = DiskFull()
    with pytest.raises(OSError, match="No space"):
        hash_file(path, [("t", 0, 50_000)], sink=sink)
    assert sink.calls == 3  # the failed consumer stops; the reader stops soon after


def _open_many(root: str, barrier, n: int) -> None:
    from registry.index import Index

    for i in range(n):
        barrier.wait(30)  # all at once, on the same fresh file
        Index(Path(root) / f"db{i}.sqlite").close()


def test_processes_opening_one_fresh_database_at_once_take_turns(tmp_path):
    # Switching a new database to WAL failed with "database is locked" in all but one of them.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_many, args=(str(tmp_path), barrier, 20)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
