"""A local network of real mergenet nodes on 127.0.0.1, as subprocesses that always die with it.

    with LocalCluster(workdir, dht=True) as cluster:
        a = cluster.start("alpha")                  # first node
        b = cluster.start("beta", peers=[a.addr])   # joins through alpha's gRPC address
    # every node got SIGTERM, then SIGKILL for its whole process group if it lingered

Each node runs in its own session (process group), so a Ctrl-C in the terminal reaches only the
caller, which stops the nodes in order; `stop()` reports processes that outlived their node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import NodeError

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
# Three nodes share the caller's cores: one compute thread each keeps them from thrashing.
CHILD_ENV = {"MERGENET_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1"}


@dataclass
class NodeProc:
    name: str
    home: Path
    proc: subprocess.Popen
    log_path: Path
    addr: str = ""
    key_id: str = ""
    dht_maddrs: list[str] = field(default_factory=list)

    def submit(self, folder: Path, **kw: Any) -> str:
        """Submit `folder` into this node's home (as `mergenet submit` would) and have it advertised."""
        from node.network.client import operator_metadata
        from node.network.remote import notify_submitted
        from registry.local import LocalRegistry

        registry = LocalRegistry(self.home)
        try:
            model_id = registry.submit(folder, **kw).id
        finally:
            registry.close()
        notify_submitted(self.addr, model_id, operator_metadata(self.home))
        return model_id


class LocalCluster:
    def __init__(self, workdir: Path, dht: bool = True, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.dht = dht
        self.env = {**os.environ, **CHILD_ENV, **(env or {})}
        self.nodes: list[NodeProc] = []

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str, peers: list[str] | None = None, env: dict[str, str] | None = None,
              listen: str = "127.0.0.1:0") -> NodeProc:
        """Start `mergenet node start` on the home `name` (fresh, or kept from an earlier start)
        and wait until it listens; `listen` an earlier address to restart a node where peers know it."""
        node = self._spawn(name, peers, env, listen)
        self._wait_ready(node)
        return node

    def start_many(self, names: list[str], peers: list[str] | None = None,
                   env: dict[str, str] | None = None) -> list[NodeProc]:
        """Start several nodes at once (they load in parallel) and wait until all listen."""
        nodes = [self._spawn(name, peers, env) for name in names]
        for node in nodes:
            self._wait_ready(node)
        return nodes

    def kill(self, node: NodeProc) -> None:
        """SIGKILL the node's whole process group, as a crash would, and forget it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        self.nodes.remove(node)

    def _spawn(self, name: str, peers: list[str] | None, env: dict[str, str] | None,
               listen: str = "127.0.0.1:0") -> NodeProc:
        home = self.workdir / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "node.cli.main", "node", "start", "--home", str(home),
               "--listen", listen, "--dht" if self.dht else "--no-dht"]
        if peers:
            cmd += ["--peers", ",".join(peers)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**self.env, **(env or {})}, start_new_session=True)
        node = NodeProc(name, home, proc, log_path)
        self.nodes.append(node)
        return node

    def _wait_ready(self, node: NodeProc) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        info_path = node.home / "node.json"
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                tail = node.log_path.read_text(errors="replace")[-800:]
                raise NodeError(f"node {node.name} exited with code {node.proc.returncode} while starting: {tail}")
            try:
                info = json.loads(info_path.read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == node.proc.pid and info.get("addr"):
                node.addr, node.dht_maddrs = info["addr"], list(info.get("dht_maddrs", []))
                node.key_id = _key_id(node.home)
                return
            time.sleep(0.1)
        raise NodeError(f"node {node.name} did not start listening within {START_TIMEOUT_S:.0f}s; "
                        f"see {node.log_path}")

    def stop(self) -> list[int]:
        """SIGTERM every node (newest first), SIGKILL stragglers; the pids that had to be killed
        after their node was gone (stray children) are returned."""
        for node in reversed(self.nodes):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self.nodes:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        strays = []
        for node in self.nodes:
            strays += _kill_group(node.proc.pid)
        self.nodes = []
        return strays


def _key_id(home: Path) -> str:
    from registry.identity import Identity

    try:
        return Identity.load(home).key_id
    except Exception:  # the key is written before node.json; a race here only costs the label
        return ""


def _kill_group(pgid: int) -> list[int]:
    """Kill what is left in a node's process group (its DHT child, p2pd) and return those pids."""
    import psutil

    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                left.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
