"""Benchmark: what an idle node costs in memory, process by process (DHT on).

    python benchmarks/node_footprint.py [--nodes 2] [--settle 5] [--workdir DIR]

Starts NODES real `mergenet node start --dht` processes on 127.0.0.1 (node/demo/cluster.py
LocalCluster; every node after the first joins through the first), lets them idle for SETTLE
seconds, then prints per kind of process (the node, its DHT child, p2pd, anything else in the
node's process group) the mean PSS (psutil memory_full_info().pss: shared pages split among
the processes sharing them, so the figures add up) and peak RSS, whether it has torch loaded,
and the total per node. Not a test: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# benchmarks/swarm.py: the same per-process sampling as the swarm figures
from swarm import kind_of, memory  # noqa: E402

from node.demo.cluster import LocalCluster  # noqa: E402

DEFAULT_NODES = 2
DEFAULT_SETTLE_S = 5.0
TORCH_LIBRARY = "libtorch"  # mapped into every process that imported torch


def loads_torch(pid: int) -> bool:
    try:
        return TORCH_LIBRARY in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def torch_by_kind(node_pids: list[int]) -> dict[str, bool]:
    """kind → whether any process of that kind in the nodes' process groups has torch mapped."""
    out: dict[str, bool] = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            pgid = os.getpgid(proc.pid)
            if pgid in node_pids:
                kind = kind_of(proc, pgid)
                out[kind] = out.get(kind, False) or loads_torch(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--settle", type=float, default=DEFAULT_SETTLE_S, help="idle seconds before sampling")
    parser.add_argument("--workdir", help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="footprint-"))
    with LocalCluster(work, dht=True) as cluster:
        first = cluster.start("node00")
        nodes = [first, *cluster.start_many([f"node{i:02d}" for i in range(1, args.nodes)], peers=[first.addr])]
        time.sleep(args.settle)
        sample = memory(nodes)
        torch = torch_by_kind([n.proc.pid for n in nodes])
    print(f"{args.nodes} idle nodes (DHT on) after {args.settle:.0f} s, load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    total = 0.0
    for kind, m in sorted(sample.items()):
        pss = statistics.mean(m["pss"]) / 1e6
        total += pss * len(m["pss"]) / args.nodes
        print(f"  {kind:<18} x{len(m['pss']):<3} PSS {pss:6.1f} MB each, peak RSS {max(m['hwm']) / 1e6:6.1f} MB, "
              f"torch {'loaded' if torch.get(kind) else 'not loaded'}")
    print(f"  per node: {total:.0f} MB PSS")


if __name__ == "__main__":
    main()
