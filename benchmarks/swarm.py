"""Benchmark: how a local network of N real nodes behaves (memory, propagation, plans, failure).

    python benchmarks/swarm.py [N] [--kill-timeout 200] [--workdir DIR]

Starts N real `mergenet node start` processes on 127.0.0.1 with the DHT on (node/demo/cluster.py
LocalCluster: own process groups, all killed at the end, also on Ctrl-C); node 0 starts alone,
every later node joins through one earlier node picked at random (seeded). Then it prints:

- memory per node once idle: PSS and peak RSS (VmHWM) of the node process, its DHT child, p2pd
  and torch_shm_manager, and how many such nodes would fit in 24 GB;
- propagation: the time from `submit` on node 0 until every node lists the model
  (`List(include_remote)` on each, polled), p50/p99 over the nodes;
- a TIES plan proposed with the CLI (`mergenet plan propose --home` of a running node, so it uses
  whatever operator credential that home carries) until the proposer says `published`, and until
  every node's copy says so;
- statements per plan (from each node's plan store, `<home>/plans/*.json`) and the bytes each node
  sends for them: the plan transport floods each new statement to every good peer except its
  sender, so a node sends about statements × (peers − 1) messages; the figure is that product
  with the statements' own sizes, per node (the protos carry no counters);
- the time until the others notice a SIGKILLed node: its model leaves every node's list (ads and
  DHT records expire after RECORD_EXPIRY_S) and its address leaves their good peers.

Everything is bounded in time and stays on 127.0.0.0/8. Not a test: the figures depend on what
else shares the machine; the load average is printed at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.demo.cluster import LocalCluster, NodeProc  # noqa: E402
from node.errors import PeerError  # noqa: E402
from node.network.client import network_info  # noqa: E402
from node.network.dht_records import RECORD_EXPIRY_S  # noqa: E402
from node.network.remote import list_remote  # noqa: E402
from node.plans.errors import UnknownPlanError  # noqa: E402

DEFAULT_N = 16
POLL_S = 0.25
PROPAGATION_TIMEOUT_S = 180.0
PLAN_TIMEOUT_S = 420.0
JOIN_BATCH = 4  # nodes started at once (joining through the same earlier node): more would only queue
MEMORY_BUDGET_GB = 24
SETTLE_S = 5.0  # idle time before memory is sampled
STATEMENT_KINDS = ("plan", "consents", "bids", "commit", "result", "attestations")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_swarm(cluster: LocalCluster, n: int, rng: random.Random) -> list[NodeProc]:
    """Node 0 alone, then batches that join through one random earlier node each."""
    nodes = [cluster.start("node00")]
    while len(nodes) < n:
        names = [f"node{i:02d}" for i in range(len(nodes), min(n, len(nodes) + JOIN_BATCH))]
        nodes += cluster.start_many(names, peers=[rng.choice(nodes).addr])
    return nodes


def kind_of(proc: psutil.Process, node_pid: int) -> str:
    if proc.pid == node_pid:
        return "node"
    name = proc.name()
    if "p2pd" in name:
        return "p2pd"
    if "torch_shm" in name:
        return "torch_shm_manager"
    return "dht child" if "python" in name else name


def peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def memory(nodes: list[NodeProc]) -> dict[str, dict[str, list[int]]]:
    """kind → {"pss": [...], "hwm": [...]} over every node's process group."""
    out: dict[str, dict[str, list[int]]] = {}
    pgids = {n.proc.pid for n in nodes}
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) not in pgids:
                continue
            kind = kind_of(proc, os.getpgid(proc.pid))
            entry = out.setdefault(kind, {"pss": [], "hwm": []})
            entry["pss"].append(proc.memory_full_info().pss)
            entry["hwm"].append(peak_rss(proc.pid))
        except (ProcessLookupError, PermissionError, FileNotFoundError, psutil.Error):
            continue
    return out


def wait_all(nodes: list[NodeProc], done: Callable[[NodeProc], bool], timeout: float) -> dict[str, float]:
    """Seconds until `done(node)` first held, per node name (missing: it never did within `timeout`)."""
    start = time.monotonic()

    def watch(node: NodeProc) -> tuple[str, float | None]:
        while time.monotonic() - start < timeout:
            try:
                if done(node):
                    return node.name, time.monotonic() - start
            except (PeerError, UnknownPlanError):  # unreachable for now, or the plan has not reached it yet
                pass
            time.sleep(POLL_S)
        return node.name, None

    with ThreadPoolExecutor(max_workers=min(len(nodes), 16)) as pool:
        results = list(pool.map(watch, nodes))
    return {name: t for name, t in results if t is not None}


def lists(model_id: str, without_holder: str | None = None) -> Callable[[NodeProc], bool]:
    def check(node: NodeProc) -> bool:
        models = {m["id"]: m for m in list_remote(node.addr)}
        if without_holder is None:
            return model_id in models
        return model_id not in models or without_holder not in models[model_id]["holders"]
    return check


def report_times(label: str, times: dict[str, float], n: int) -> None:
    if not times:
        print(f"{label}: no node within the timeout")
        return
    values = list(times.values())
    print(f"{label}: {len(values)}/{n} nodes, p50 {percentile(values, 0.5):.2f}s, p99 {percentile(values, 0.99):.2f}s, "
          f"max {max(values):.2f}s")


def statements(node: NodeProc, plan_id: str) -> list[int]:
    """Sizes (bytes of canonical JSON) of every statement of the plan this node holds."""
    path = node.home / "plans" / (plan_id.removeprefix("sha256:") + ".json")
    record = json.loads(path.read_text())
    sizes = []
    for kind in STATEMENT_KINDS:
        value = record.get(kind)
        items = value.values() if isinstance(value, dict) and kind.endswith("s") else [value] if value else []
        sizes += [len(json.dumps(item, sort_keys=True, separators=(",", ":"))) for item in items]
    return sizes


def propose(node: NodeProc, recipe: dict, workdir: Path) -> str:
    path = workdir / "plan.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = subprocess.run([sys.executable, "-m", "node.cli.main", "plan", "propose", str(path), "--home",
                          str(node.home), "--node", node.addr, "--json"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**os.environ, "MERGENET_NO_PROGRESS": "1"})
    if out.returncode:
        raise RuntimeError(f"plan propose failed ({out.returncode}): {out.stderr[-800:]}")
    return json.loads(out.stdout)["plan_id"]


def plan_state(plan_id: str, state: str) -> Callable[[NodeProc], bool]:
    from node.plans.client import PlansClient

    def check(node: NodeProc) -> bool:
        return PlansClient(node.addr).status(plan_id, executor_progress=False)["state"] == state
    return check


def run(n: int, workdir: Path, kill_timeout: float, seed: int) -> None:
    from transformers.utils import logging as hf_logging

    from node.demo.models import make_family

    hf_logging.disable_progress_bar()
    rng = random.Random(seed)
    base_dir, (e1_dir, e2_dir) = make_family(workdir / "models", arch="llama", n_experts=2, seed=seed)
    _, (spare_dir,) = make_family(workdir / "spare", arch="llama", n_experts=1, seed=seed + 1)
    with LocalCluster(workdir, dht=True) as cluster:
        t0 = time.monotonic()
        nodes = start_swarm(cluster, n, rng)
        print(f"{n} nodes started in {time.monotonic() - t0:.1f}s (batches of {JOIN_BATCH}, each joining through "
              "one earlier node)")
        time.sleep(SETTLE_S)
        mem = memory(nodes)
        total = 0.0
        for kind, m in sorted(mem.items()):
            pss = statistics.mean(m["pss"]) / 1e6
            total += pss * len(m["pss"]) / n
            print(f"  {kind:<18} ×{len(m['pss']):<3} PSS {pss:6.1f} MB each, peak RSS {max(m['hwm']) / 1e6:6.1f} MB")
        print(f"  per node: {total:.0f} MB PSS → about {int(MEMORY_BUDGET_GB * 1000 / total)} idle nodes fit in "
              f"{MEMORY_BUDGET_GB} GB (a merge adds its own working set on the executor)")

        base = nodes[0].submit(base_dir, license="MIT", policy="open", name="swarm-base")
        report_times("submit → every node lists the model", wait_all(nodes, lists(base), PROPAGATION_TIMEOUT_S), n)
        e1 = nodes[1 % n].submit(e1_dir, base=base, license="MIT", policy="open", name="swarm-e1")
        e2 = nodes[2 % n].submit(e2_dir, base=base, license="MIT", policy="open", name="swarm-e2")
        wait_all(nodes, lambda node: lists(e1)(node) and lists(e2)(node), PROPAGATION_TIMEOUT_S)

        recipe = {"merge_method": "ties", "base_model": base, "dtype": "float32",
                  "models": [{"model": e1, "parameters": {"weight": 0.5, "density": 0.6}},
                             {"model": e2, "parameters": {"weight": 0.5, "density": 0.6}}]}
        proposer = nodes[-1]
        t0 = time.monotonic()
        plan_id = propose(proposer, recipe, workdir)
        proposed = time.monotonic() - t0  # the CLI's own start-up and the Propose call
        published = wait_all(nodes, plan_state(plan_id, "published"), PLAN_TIMEOUT_S)
        if proposer.name in published:
            print(f"plan propose → published on the proposer: {proposed + published[proposer.name]:.1f}s "
                  f"(of which {proposed:.1f}s the CLI command)")
        report_times("plan propose → published on every node",
                     {k: proposed + v for k, v in published.items()}, n)
        sizes = {node.name: statements(node, plan_id) for node in nodes}
        peers = {node.name: network_info(node.addr).peer_count for node in nodes}
        counts = [len(s) for s in sizes.values()]
        sent = [sum(s) * max(0, peers[name] - 1) for name, s in sizes.items()]
        print(f"statements per plan: {max(counts)} (nodes hold {min(counts)}–{max(counts)}), "
              f"{statistics.mean(b for s in sizes.values() for b in s) / 1e3:.1f} kB each; good peers per node "
              f"{min(peers.values())}–{max(peers.values())}; sent per node ≈ statements × (peers − 1): "
              f"{statistics.mean(c * max(0, peers[k] - 1) for k, c in zip(sizes, counts, strict=True)):.0f} "
              f"messages, {statistics.mean(sent) / 1e6:.2f} MB (max {max(sent) / 1e6:.2f} MB)")
        mem = memory(nodes)
        for kind in ("node", "dht child"):
            if kind in mem:
                print(f"  peak RSS after the plan, {kind}: max {max(mem[kind]['hwm']) / 1e6:.0f} MB, "
                      f"median {statistics.median(mem[kind]['hwm']) / 1e6:.0f} MB")

        victim = nodes[n // 2]
        spare = victim.submit(spare_dir, base=base, license="MIT", policy="open", name="swarm-victim-model")
        others = [node for node in nodes if node is not victim]
        wait_all(others, lists(spare), PROPAGATION_TIMEOUT_S)
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        print(f"SIGKILLed {victim.name}; waiting up to {kill_timeout:.0f}s (records and ads expire after "
              f"{RECORD_EXPIRY_S:.0f}s)")
        gone = wait_all(others, lists(spare, without_holder=victim.addr), kill_timeout)
        report_times("  its model leaves every node's list", gone, len(others))
        dropped = wait_all(others, lambda node: network_info(node.addr).peer_count < peers[node.name], 5.0)
        report_times("  and its address has left their good peers (checked right after)", dropped, len(others))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=DEFAULT_N, help=f"nodes (default {DEFAULT_N})")
    ap.add_argument("--kill-timeout", type=float, default=RECORD_EXPIRY_S + 80,
                    help="seconds to wait for the network to notice the killed node")
    ap.add_argument("--workdir", type=Path, help="keep homes and logs here (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"CPU: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; "
          f"memory available {psutil.virtual_memory().available / 1e9:.1f} GB")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args.n, args.workdir, args.kill_timeout, args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="mergenet-swarm-") as tmp:
            run(args.n, Path(tmp), args.kill_timeout, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
