"""CLI commands for the network: `node start`, `node status`, `pull`.

    mergenet node start --listen 127.0.0.1:7470 --peers 10.0.0.2:7470
    mergenet node status [--node HOST:PORT]
    mergenet pull ID [-o DIR] [--from HOST:PORT,...] [--trusted-only]

Heavy imports (grpc, hivemind, torch) happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli.context import Context


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `node start`, `node status` and `pull` to the parser."""
    node = sub.add_parser("node", parents=[common], help="run or inspect a contributor node")
    node_sub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND", required=True)

    start = node_sub.add_parser("start", parents=[common], help="run a node in the foreground (Ctrl-C stops it)")
    start.add_argument("--listen", help="gRPC address HOST:PORT (default 127.0.0.1:7470; port 0 picks one)")
    start.add_argument("--peers", help="gRPC addresses of known nodes, HOST:PORT,...; their DHT is joined too")
    start.add_argument("--dht", action=argparse.BooleanOptionalAction, default=True,
                       help="run a hivemind DHT peer for discovery (default on)")
    start.add_argument("--initial-peers", help="DHT multiaddrs to join directly, comma-separated")
    start.add_argument("--advertise", help="HOST:PORT peers should dial (default: the listen address; "
                                           "0.0.0.0 becomes this machine's address)")
    start.add_argument("--metrics-port", metavar="[HOST:]PORT", help="serve Prometheus metrics at /metrics "
                                                                  "(host default 127.0.0.1; off unless given)")
    start.add_argument("--status-port", metavar="[HOST:]PORT", help="serve a read-only status web page "
                                                                 "(host default 127.0.0.1; off unless given)")
    start.set_defaults(func=cmd_node_start)

    status = node_sub.add_parser("status", parents=[common], help="peers, models held and capacity of a node")
    status.add_argument("--node", help="HOST:PORT of the node (default: this home's node, $MERGENET_NODE, "
                                       "127.0.0.1:7470)")
    status.set_defaults(func=cmd_node_status)

    pull = sub.add_parser("pull", parents=[common], help="materialize a model as a folder, from the local store "
                                                        "or the network, verified before it is visible")
    pull.add_argument("model_id", metavar="ID", help="model id (sha256:<hex>)")
    pull.add_argument("-o", "--output", help="destination folder (default: ./<model name>)")
    pull.add_argument("--from", dest="sources", help="pull from these nodes (HOST:PORT,...) instead of asking "
                                                      "the local node for holders")
    pull.add_argument("--node", help="local node to ask for holders (default: this home's node, $MERGENET_NODE)")
    pull.add_argument("--trusted-only", action="store_true", help="refuse models whose signer is not trusted")
    pull.set_defaults(func=cmd_pull)


def cmd_node_start(args: argparse.Namespace, ctx: Context) -> int:
    from node.process.config import NodeConfig
    from node.process.daemon import Node

    config = NodeConfig.from_flags(ctx.home, args.listen, args.peers, args.dht, args.initial_peers,
                                   args.advertise, args.metrics_port, args.status_port)
    node = Node(config)
    node.start()
    try:
        info = {"addr": node.addr, "dht_maddrs": node.dht_maddrs, "key_id": node.network.self_ref.key_id,
                "home": str(ctx.home)}
        maddrs = "\n".join(f"  {m}" for m in node.dht_maddrs) or "  (DHT off)"
        ctx.emit(info, f"mergenet node listening on {node.addr}\nDHT multiaddrs:\n{maddrs}\n"
                       f"join it with: mergenet node start --peers {node.addr}")
        node.run_until_signal()
    finally:
        node.stop()
    return 0


def cmd_node_status(args: argparse.Namespace, ctx: Context) -> int:
    from node.network.client import network_info

    addr = ctx.node_addr(args.node)
    info = network_info(addr)
    cap = info.capacity
    data: dict[str, Any] = {
        "addr": info.node.grpc_addr, "key_id": info.node.key_id, "version": info.node.version,
        "dht_maddrs": list(info.dht_maddrs), "peers": info.peer_count, "models": list(info.model_ids),
        "capacity": {"cpus": cap.cpus, "memory_bytes": cap.memory_bytes, "gpus": cap.gpus,
                     "gpu_memory_bytes": cap.gpu_memory_bytes},
    }
    data["plans_in_flight"] = _plans_in_flight(ctx, addr)
    lines = [f"node      {data['addr']}  (key {info.node.key_id[:16]})",
             f"peers     {info.peer_count}",
             f"models    {len(info.model_ids)}", *[f"  {m}" for m in info.model_ids],
             f"plans     {len(data['plans_in_flight'])} in flight",
             *[f"  {p['plan_id'][:23]}  {p['state']}" for p in data["plans_in_flight"]],
             f"capacity  {cap.cpus} CPUs, {cap.memory_bytes / 2**30:.1f} GiB RAM, {cap.gpus} GPUs",
             "DHT       " + (", ".join(info.dht_maddrs) or "off")]
    ctx.emit(data, "\n".join(lines))
    return 0


def _plans_in_flight(ctx: Context, addr: str) -> list[dict[str, Any]]:
    """Plans this node follows that have not reached a final state (published, failed, ...)."""
    from node.plans.client import PlansClient
    from node.plans.state import FINAL

    return [{"plan_id": d["plan_id"], "state": d["state"]} for d in PlansClient(addr).list()
            if d["state"] not in FINAL]


def cmd_pull(args: argparse.Namespace, ctx: Context) -> int:
    from node.transfer.pull import pull

    sources = [s.strip() for s in (args.sources or "").split(",") if s.strip()]
    out = Path(args.output).expanduser().resolve() if args.output else None
    node_addr = None if sources else ctx.node_addr(args.node)
    with ctx.progress(f"pull {args.model_id[:19]}", unit="B", unit_scale=True) as progress:
        result = pull(args.model_id, ctx.home, out, sources=sources, node_addr=node_addr,
                      trusted_only=args.trusted_only, progress=progress)
    if result.sources != ("local",) and node_addr:
        from node.network.remote import notify_submitted

        notify_submitted(node_addr, result.model_id)
    data = {"id": result.model_id, "path": str(result.path), "sources": list(result.sources),
            "bytes_fetched": result.bytes_fetched}
    origin = "local store" if result.sources == ("local",) else ", ".join(result.sources)
    ctx.emit(data, f"{result.model_id}\n  -> {result.path}  (from {origin}, {result.bytes_fetched} bytes fetched)")
    return 0
