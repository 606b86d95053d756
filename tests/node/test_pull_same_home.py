"""Pulls that share one home (issue 10): two at once, from two threads or two processes, must
both succeed and leave every blob matching its name; a blob corrupted on disk is found by
`mergenet store check`, removed by `--repair`, and fetched again by the next pull."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.node.netutil import REPO, folder_bytes, run_cli, submit_copy

pytestmark = pytest.mark.timeout(180)

# Slow enough that the two pulls' streams of the ~9 MiB weights overlap for seconds.
SLOW = {"MERGENET_TEST_THROTTLE_S": "0.2"}


@pytest.fixture
def holder(swarm, big_model, tmp_path):
    home = tmp_path / "H"
    model_id, folder = submit_copy(big_model, home, tmp_path / "work")
    return swarm.start(home, "--no-dht", env=SLOW), model_id, folder


def fetchable_bytes(folder: Path) -> int:
    """Bytes a puller streams: every signed file except mergenet.json, which comes with the ad."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name not in ("mergenet.json", "model.sig"))


def assert_store_clean(home: Path) -> None:
    res = run_cli("store", "check", "--json", home=home)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["corrupt"] == [] and doc["partials"] == [] and doc["incomplete_models"] == []
    assert list((home / "store" / "partial").iterdir()) == []


def test_two_processes_pulling_into_one_home_both_succeed(holder, tmp_path):
    node, model_id, folder = holder
    home = tmp_path / "P"
    procs = [subprocess.Popen([sys.executable, "-m", "node.cli.main", "pull", model_id, "-o", str(tmp_path / out),
                               "--from", node.addr, "--json", "--home", str(home)],
                              cwd=REPO, env={**os.environ, "MERGENET_NO_PROGRESS": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for out in ("out1", "out2")]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    docs = [json.loads(out) for out, _ in outs]
    # One writer per blob: whichever pull got a blob's lock fetched it, the other reused it.
    assert sum(d["bytes_fetched"] for d in docs) == fetchable_bytes(folder)
    for out in ("out1", "out2"):
        assert folder_bytes(tmp_path / out) == folder_bytes(folder)
    assert_store_clean(home)


def test_two_threads_pulling_into_one_home_both_succeed(holder, tmp_path):
    from node.transfer.pull import pull_from_network
    from registry.local import LocalRegistry

    node, model_id, folder = holder
    home = tmp_path / "P"
    results, errors = [], []

    def pull(out: str) -> None:
        registry = LocalRegistry(home)
        try:
            results.append(pull_from_network(registry, model_id, tmp_path / out, [node.addr]))
        except Exception as exc:  # reported below, with the other thread's outcome
            errors.append(exc)
        finally:
            registry.close()

    threads = [threading.Thread(target=pull, args=(out,)) for out in ("out1", "out2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 2
    assert sum(r.bytes_fetched for r in results) == fetchable_bytes(folder)
    for out in ("out1", "out2"):
        assert folder_bytes(tmp_path / out) == folder_bytes(folder)
    assert_store_clean(home)


def test_corrupt_blob_is_found_repaired_and_pulled_again(holder, tmp_path):
    node, model_id, folder = holder
    home = tmp_path / "P"
    assert run_cli("pull", model_id, "-o", str(tmp_path / "first"), "--from", node.addr, home=home).returncode == 0
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    blob = home / "store" / "sha256" / weights[:2] / weights
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:  # bit rot in the middle of the weights
        f.seek(blob.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))

    res = run_cli("store", "check", "--json", home=home)
    assert res.returncode == 3, res.stderr
    corrupt = json.loads(res.stdout)["corrupt"]
    assert [(c["digest"], [m["id"] for m in c["models"]]) for c in corrupt] == [("sha256:" + weights, [model_id])]
    # Until it is repaired, the local copy is refused rather than handed out.
    assert run_cli("pull", model_id, "-o", str(tmp_path / "refused"), home=home).returncode == 3
    assert not (tmp_path / "refused").exists()

    res = run_cli("store", "check", "--repair", "--json", home=home)
    assert res.returncode == 0 and json.loads(res.stdout)["repaired"] is True
    res = run_cli("pull", model_id, "-o", str(tmp_path / "again"), "--from", node.addr, "--json", home=home)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["bytes_fetched"] == (folder / "model.safetensors").stat().st_size
    assert folder_bytes(tmp_path / "again") == folder_bytes(folder)
    assert run_cli("verify", model_id, home=home).returncode == 0
    assert_store_clean(home)
