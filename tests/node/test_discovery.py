"""Two real hivemind DHT peers in their own processes: records are visible to the other peer,
a record forged under someone else's owner marker is refused, leaving removes a node at once,
stop() reaps the DHT child and its p2pd, and the node's process never imports hivemind or torch."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from node.network.dht_records import NODES_KEY, NodeRecord, holders_key
from node.network.discovery import Discovery

pytestmark = pytest.mark.timeout(120)


def test_announce_find_forge_leave_and_reap():
    import hivemind
    from hivemind.dht.crypto import RSASignatureValidator
    from hivemind.utils.crypto import RSAPrivateKey
    from hivemind.utils.timed_storage import get_dht_time

    a = Discovery.start()
    b = Discovery.start(initial_peers=a.maddrs())
    kids = [psutil.Process(d.pid) for d in (a, b)]
    kids += [k for d in (a, b) for k in psutil.Process(d.pid).children(recursive=True)]
    assert {"p2pd"} <= {k.name() for k in kids}
    try:
        a.announce(NodeRecord(addr="127.0.0.1:1001", models=("sha256:" + "a" * 64,)), ["sha256:" + "a" * 64])
        b.announce(NodeRecord(addr="127.0.0.1:1002"))
        assert {r.addr for r in b.find_nodes()} == {"127.0.0.1:1001", "127.0.0.1:1002"}
        assert b.find_holders("sha256:" + "a" * 64) == ["127.0.0.1:1001"]

        # A third peer writes under A's owner marker without A's key: the validators refuse it.
        forger = hivemind.DHT(initial_peers=a.maddrs(), start=True,
                              record_validators=[RSASignatureValidator(RSAPrivateKey())])
        try:
            marker = a.marker.encode()
            forged = forger.store(NODES_KEY, {"addr": "6.6.6.6:1"}, get_dht_time() + 60, subkey=marker)
            assert not forged
            forged = forger.store(holders_key("sha256:" + "a" * 64), "6.6.6.6:1", get_dht_time() + 60, subkey=marker)
            assert not forged
        finally:
            forger.shutdown()
        assert "6.6.6.6:1" not in {r.addr for r in b.find_nodes()}
        assert b.find_holders("sha256:" + "a" * 64) == ["127.0.0.1:1001"]

        a.leave(["sha256:" + "a" * 64])
        assert {r.addr for r in b.find_nodes()} == {"127.0.0.1:1002"}
        assert b.find_holders("sha256:" + "a" * 64) == []
    finally:
        a.stop()
        b.stop()
    _, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive, f"left running after stop(): {[p.name() for p in alive]}"


def fresh_interpreter(lines: list[str], timeout: float) -> str:
    """Run `lines` in a new interpreter (this test process has imported torch and hivemind) and
    return the last line it printed."""
    out = subprocess.run([sys.executable, "-c", "\n".join(["import sys", "from pathlib import Path", *lines])],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_an_idle_node_with_the_dht_on_imports_neither_hivemind_nor_torch(tmp_path):
    """The DHT peer runs in its own interpreter: the node process pays for neither."""
    last = fresh_interpreter([
        "from node.process.config import NodeConfig",
        "from node.process.daemon import Node",
        f"n = Node(NodeConfig(home=Path({str(tmp_path / 'home')!r}), listen='127.0.0.1:0', dht=True))",
        "n.start()",
        "try:",
        "    assert n.discovery is not None and n.discovery.maddrs()",
        "    print(sorted(m for m in ('hivemind', 'torch') if m in sys.modules))",
        "finally:",
        "    n.stop()",
    ], timeout=90)
    assert last == "[]"


def test_bidding_on_a_plan_imports_no_torch(tmp_path):
    """A node bids on every plan it hears of, but executes or verifies only a few: the bid must
    not import torch (seconds inside the Offer handler, ~200 MB kept) to learn about GPUs."""
    last = fresh_interpreter([
        "from types import SimpleNamespace",
        "from node.jobs.context import JobContext",
        "from node.jobs.node_jobs import NodeJobs",
        f"jobs = NodeJobs(JobContext(home=Path({str(tmp_path)!r}), key_id='k', address_fn=lambda: '127.0.0.1:1'))",
        "jobs.gpu.wait(120)",
        "bid = jobs.bid(SimpleNamespace(plan_id='sha256:' + '0' * 64), '127.0.0.1:1')",
        "assert bid is not None and bid.memory_bytes > 0",
        "print(bid.device, 'torch' in sys.modules)",
    ], timeout=180)
    device, imported = last.split()
    assert imported == "False" and device in ("cpu", "cuda"), last


def test_checking_a_plans_recipe_imports_no_torch():
    """Every node checks the recipe of every plan it hears of (references, method, parameters);
    only the executor and verifiers need torch."""
    ids = ["sha256:" + c * 64 for c in "abc"]
    last = fresh_interpreter([
        "from merge.recipe import load_recipe",
        f"r = load_recipe({{'merge_method': 'ties', 'base_model': {ids[0]!r}, 'parameters': {{'density': 0.5}},"
        f" 'models': [{{'model': {ids[1]!r}, 'parameters': {{'weight': 0.5}}}}, {{'model': {ids[2]!r}}}]}})",
        "print(len(r.model_refs()), 'torch' in sys.modules)",
    ], timeout=60)
    assert last == "3 False"


def test_the_gpu_probe_answers_without_torch_when_no_driver_is_present(tmp_path):
    from node.jobs.gpu import GpuProbe

    probe = GpuProbe(markers=[str(tmp_path / "no-such-device")])
    probe.start()
    assert probe.wait(0) and probe.available is False
