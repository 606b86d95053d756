"""CLI commands for running a contributor node: `node start|stop|status|config`.

    mergenet node start --listen 127.0.0.1:7470 --peers 10.0.0.2:7470
    mergenet node stop                   # the node running on this home: SIGTERM, then wait
    mergenet node status [--node HOST:PORT]
    mergenet node config [--json]        # settings: HOME/config.toml < environment < flags

Heavy imports (grpc, hivemind) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from node.cli.context import Context

# `node stop` waits for the node's own bounded stop (node.process.shutdown) and a little more.
STOP_MARGIN_S = 10.0
STOP_POLL_S = 0.2
# Flags of `node start` that are settings (node.process.settings), by setting name.
SETTING_FLAGS = ("listen", "advertise", "peers", "dht", "initial_peers", "consent_policy", "metrics_port",
                 "status_port")


def _setting_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="gRPC address HOST:PORT (default 127.0.0.1:7470; port 0 picks one)")
    p.add_argument("--peers", help="gRPC addresses of known nodes, HOST:PORT,...; their DHT is joined too")
    p.add_argument("--dht", action=argparse.BooleanOptionalAction, default=None,
                   help="run a hivemind DHT peer for discovery (default on)")
    p.add_argument("--initial-peers", help="DHT multiaddrs to join directly, comma-separated")
    p.add_argument("--advertise", help="HOST:PORT peers should dial (default: the listen address; "
                                       "0.0.0.0 becomes this machine's address)")
    p.add_argument("--consent-policy", choices=("accept", "reject", "manual"),
                   help="answer to plans reading this node's consent-policy models (default accept)")
    p.add_argument("--metrics-port", metavar="[HOST:]PORT", help="serve Prometheus metrics at /metrics "
                                                              "(host default 127.0.0.1; off unless given)")
    p.add_argument("--status-port", metavar="[HOST:]PORT", help="serve a read-only status web page "
                                                             "(host default 127.0.0.1; off unless given)")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `node start|stop|status|config` to the parser."""
    node = sub.add_parser("node", parents=[common], help="run or inspect a contributor node")
    node_sub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND", required=True)

    start = node_sub.add_parser("start", parents=[common], help="run a node in the foreground (Ctrl-C stops it); "
                                                                 "settings come from HOME/config.toml, the "
                                                                 "environment and these flags")
    _setting_flags(start)
    start.set_defaults(func=cmd_node_start)

    stop = node_sub.add_parser("stop", parents=[common], help="stop the node running on this home")
    stop.set_defaults(func=cmd_node_stop)

    status = node_sub.add_parser("status", parents=[common], help="peers, models held and capacity of a node")
    status.add_argument("--node", help="HOST:PORT of the node (default: this home's node, $MERGENET_NODE, "
                                       "127.0.0.1:7470)")
    status.set_defaults(func=cmd_node_status)

    config = node_sub.add_parser("config", parents=[common], help="the settings `node start` would use, and "
                                                                   "where each comes from")
    _setting_flags(config)
    config.set_defaults(func=cmd_node_config)


def _settings(args: argparse.Namespace, ctx: Context) -> Any:
    from node.process.settings import load_settings

    return load_settings(ctx.home, flags={name: getattr(args, name) for name in SETTING_FLAGS})


def _trust_configured(ctx: Context, keys: tuple[str, ...]) -> None:
    """Add the config's `trust` entries (64-hex key ids or PEM files) to the trusted keys."""
    from registry.home import Home
    from registry.trust import TrustList

    trust = TrustList(Home(ctx.home).ensure().trust_path)
    for key in keys:
        path = Path(key).expanduser()
        trust.add(path.read_text() if path.is_file() else key)


def cmd_node_start(args: argparse.Namespace, ctx: Context) -> int:
    # One line per error: gRPC's C core would print its own log lines (a port clash) to stderr.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from node.process.config import NodeConfig
    from node.process.daemon import Node

    settings = _settings(args, ctx)
    settings.export_env()
    _trust_configured(ctx, settings.values["trust"])
    node = Node(NodeConfig.from_settings(ctx.home, settings.values))
    node.start()
    try:
        info = {"addr": node.addr, "dht_maddrs": node.dht_maddrs, "key_id": node.network.self_ref.key_id,
                "home": str(ctx.home), "log": str(node.log_path), "join": join_hints(node.addr, node.config.listen,
                                                                                      ctx.home)}
        maddrs = "\n".join(f"  {m}" for m in node.dht_maddrs) or "  (DHT off)"
        hints = "\n".join(f"  {h}" for h in info["join"])
        ctx.emit(info, f"mergenet node listening on {node.addr}\nDHT multiaddrs:\n{maddrs}\n"
                       f"log: {node.log_path}\njoin it with:\n{hints}")
        node.run_until_signal()
    finally:
        node.stop()
    return 0


def join_hints(addr: str, listen: str, home: Path) -> list[str]:
    """Commands that join this node as printed: from this machine (another home, a free port)
    and, unless the node listens on loopback only, from another machine."""
    from node.process.config import parse_hostport

    host, _ = parse_hostport(listen)
    bind = f"[{host}]" if ":" in host else host
    hints = [f"mergenet node start --home {home}-2 --listen {bind}:0 --peers {addr}"]
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        hints.append(f"mergenet node start --peers {addr}   # on another machine")
    return hints


def cmd_node_stop(args: argparse.Namespace, ctx: Context) -> int:
    import signal

    from node.errors import NodeError
    from node.process.lockfile import HomeLock
    from node.process.shutdown import STOP_DEADLINE_S

    lock = HomeLock(ctx.home)
    pid = lock.holder()
    if pid is None:
        ctx.emit({"stopped": False, "pid": None, "home": str(ctx.home)}, f"no node is running on {ctx.home}")
        return 0
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_DEADLINE_S + STOP_MARGIN_S
    while lock.holder() is not None:
        if time.monotonic() > deadline:
            raise NodeError(f"the node (pid {pid}) on {ctx.home} did not stop within "
                            f"{STOP_DEADLINE_S + STOP_MARGIN_S:g}s; kill it with `kill -9 {pid}`")
        time.sleep(STOP_POLL_S)
    ctx.emit({"stopped": True, "pid": pid, "home": str(ctx.home)}, f"stopped the node (pid {pid}) on {ctx.home}")
    return 0


def cmd_node_config(args: argparse.Namespace, ctx: Context) -> int:
    settings = _settings(args, ctx)
    doc = settings.to_dict()
    width = max(len(name) for name in doc["settings"])
    lines = [f"# {doc['file']}" + ("" if settings.path.exists() else " (not present: defaults, environment, flags)")]
    lines += [f"{name:<{width}} = {_shown(s['value'])}   # {s['source']}" + (f", ${s['env']}" if s["source"] == "env"
                                                                            else "")
              for name, s in doc["settings"].items()]
    ctx.emit(doc, "\n".join(lines))
    return 0


def _shown(value: Any) -> str:
    import json

    return json.dumps(value)


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
