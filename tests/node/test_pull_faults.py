"""Pulls under failure, with real nodes: a holder killed mid-transfer, a puller killed and
restarted, a holder that flips bytes. Holders are throttled by a test-only env var so that a
transfer of the ~9 MiB model takes long enough to interrupt."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.transfer.fetch import PARALLEL_BLOBS
from tests.node.netutil import REPO, clone_home, folder_bytes, run_cli, submit_copy

pytestmark = pytest.mark.timeout(180)

SLOW = {"MERGENET_TEST_THROTTLE_S": "0.15"}


@pytest.fixture
def holder_home(big_model, tmp_path) -> tuple[Path, str, Path]:
    home = tmp_path / "H1"
    model_id, folder = submit_copy(big_model, home, tmp_path / "work")
    return home, model_id, folder


def partial_size(home: Path) -> int:
    total = 0
    for p in (home / "store" / "partial").glob("*.incomplete"):
        with contextlib.suppress(FileNotFoundError):  # committed between the listing and the stat
            total += p.stat().st_size
    return total


def start_pull(home: Path, model_id: str, out: Path, sources: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "pull", model_id, "-o", str(out), "--from", ",".join(sources),
         "--json", "-v", "--home", str(home)],
        cwd=REPO, env={**os.environ, "MERGENET_NO_PROGRESS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)


def wait_partial(home: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while partial_size(home) < at_least:
        if proc.poll() is not None:
            raise AssertionError(f"pull ended before it could be interrupted: {proc.stderr.read()[-1500:]}")
        if time.monotonic() > deadline:
            raise AssertionError("pull made no progress")
        time.sleep(0.02)


def fetchable_bytes(folder: Path) -> int:
    """Bytes a puller streams: every signed file except mergenet.json, which comes with the ad."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name not in ("mergenet.json", "model.sig"))


def test_holder_killed_mid_pull_completes_from_second_holder(swarm, holder_home, tmp_path):
    home, model_id, folder = holder_home
    first = swarm.start(home, "--no-dht", env=SLOW)
    second = swarm.start(clone_home(home, tmp_path / "H2"), "--no-dht")
    puller, out = tmp_path / "P", tmp_path / "out"
    proc = start_pull(puller, model_id, out, [first.addr, second.addr])
    try:
        wait_partial(puller, 2 << 20, proc)
        first.proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    doc = json.loads(stdout)
    assert second.addr in doc["sources"]
    # Resumed where the dead holder stopped: no byte was fetched twice.
    assert doc["bytes_fetched"] == fetchable_bytes(folder)
    assert folder_bytes(out) == folder_bytes(folder)
    assert partial_size(puller) == 0


def test_puller_killed_and_restarted_resumes_from_partial_file(swarm, holder_home, tmp_path):
    home, model_id, folder = holder_home
    holder = swarm.start(home, "--no-dht", env=SLOW)
    puller, out = tmp_path / "P", tmp_path / "out"
    proc = start_pull(puller, model_id, out, [holder.addr])
    try:
        wait_partial(puller, 3 << 20, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    kept = partial_size(puller)
    assert kept >= 3 << 20 and not out.exists(), "an interrupted pull must not leave a visible folder"
    res = run_cli("pull", model_id, "-o", str(out), "--from", holder.addr, "--json", home=puller)
    assert res.returncode == 0, res.stderr
    fetched = json.loads(res.stdout)["bytes_fetched"]
    assert fetched <= fetchable_bytes(folder) - kept
    assert folder_bytes(out) == folder_bytes(folder)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out.pulling-")] == []


def test_tampering_holder_is_caught_and_abandoned(swarm, holder_home, tmp_path):
    home, model_id, folder = holder_home
    liar = swarm.start(clone_home(home, tmp_path / "T"), "--no-dht", env={"MERGENET_TEST_TAMPER": "1"})
    honest = swarm.start(home, "--no-dht")

    alone = run_cli("pull", model_id, "-o", str(tmp_path / "bad"), "--from", liar.addr, home=tmp_path / "P1")
    assert alone.returncode == 3, alone.stderr
    assert "do not match" in alone.stderr and not (tmp_path / "bad").exists()

    res = run_cli("pull", model_id, "-o", str(tmp_path / "good"), "--from", f"{liar.addr},{honest.addr}",
                  "--json", "-v", home=tmp_path / "P2")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sources"] == [honest.addr]
    # Caught, then remembered: blobs started after the first catch never go to the liar.
    blobs = [p for p in folder.iterdir() if p.name not in ("mergenet.json", "model.sig")]
    assert 1 <= res.stderr.count("abandoning it") <= min(PARALLEL_BLOBS, len(blobs) - 1)
    assert folder_bytes(tmp_path / "good") == folder_bytes(folder)


def test_stalled_holder_is_cancelled_and_the_pull_moves_on(swarm, holder_home, tmp_path):
    from node.network.peers import PeerTable
    from node.transfer.pull import pull_from_network
    from registry.local import LocalRegistry

    home, model_id, folder = holder_home
    frozen = swarm.start(home, "--no-dht", env=SLOW)
    backup = swarm.start(clone_home(home, tmp_path / "H2"), "--no-dht")
    registry = LocalRegistry(tmp_path / "P")
    peers = PeerTable()

    def freeze_midway(done: int, total: int) -> None:
        if done > 2 << 20 and frozen.proc.poll() is None and not getattr(freeze_midway, "sent", False):
            freeze_midway.sent = True
            os.kill(frozen.pid, signal.SIGSTOP)

    try:
        result = pull_from_network(registry, model_id, tmp_path / "out", [frozen.addr, backup.addr], peers=peers,
                                   progress=freeze_midway, stall_timeout_s=1.5)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        registry.close()
    assert getattr(freeze_midway, "sent", False)
    assert backup.addr in result.sources and peers.is_bad(frozen.addr)
    assert folder_bytes(tmp_path / "out") == folder_bytes(folder)


def test_corrupt_partial_file_is_refetched_without_blaming_the_holder(swarm, holder_home, tmp_path):
    import hashlib

    from registry.store import BlobStore

    home, model_id, folder = holder_home
    holder = swarm.start(home, "--no-dht")
    puller = tmp_path / "P"
    weights = folder / "model.safetensors"
    store = BlobStore(puller / "store", puller / "tmp")
    store.partial_path(hashlib.sha256(weights.read_bytes()).hexdigest()).write_bytes(os.urandom(1 << 20))
    res = run_cli("pull", model_id, "-o", str(tmp_path / "out"), "--from", holder.addr, "--json", home=puller)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["sources"] == [holder.addr] and "abandoning" not in res.stderr
    # The kept megabyte was garbage: the resumed tail failed, then the whole blob came again.
    assert doc["bytes_fetched"] == fetchable_bytes(folder) + weights.stat().st_size - (1 << 20)
    assert folder_bytes(tmp_path / "out") == folder_bytes(folder)
