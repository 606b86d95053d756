"""The contributor node process: DHT peer, gRPC server, announce and plan loops, clean shutdown.

    node = Node(NodeConfig(home=path, listen="127.0.0.1:0"))
    node.start()            # DHT first (hivemind forks), bind, build with the real address, serve
    node.run_until_signal() # SIGINT/SIGTERM → stop(): announce leaving, stop gRPC, reap the DHT

`start` and `stop` own every thread and process the node runs: the DHT child, the gRPC server,
the announce loop and the plan ticker. `start` takes the home lock (one node per home) and
keeps it until `stop`; a signal that `stop` cannot honour in time ends the process hard
(node.process.shutdown). The log is `home/logs/node.log`, JSON lines (node.process.logs).
`home/node.json` ({"pid", "addr", "dht_maddrs"}) lets
client commands find the local node; it is removed on a clean stop and ignored when its pid is gone.
Each start also issues a new operator token (HOME/operator.token, `node.process.auth`) that local
clients send on the calls only the operator may make.
With `metrics`/`status` configured, it also serves the Prometheus endpoint and the status page
(their addresses are added to node.json).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.network.dht_records import ANNOUNCE_PERIOD_S
from node.network.peers import PeerTable
from node.network.view import Network, say_goodbye
from node.process.auth import OperatorGate, new_token, save_token
from node.process.config import NodeConfig, check_port_free, parse_hostport
from node.process.lockfile import HomeLock
from node.process.logs import LOG_FILE, attach_file_log, detach
from node.process.server import NodeServer, ServiceSpec
from node.process.shutdown import StopWatchdog
from registry.services.hooks import PeerRef
from registry.services.local_view import LocalView
from registry.version import MERGENET_VERSION

log = logging.getLogger(__name__)

NODE_FILE = "node.json"
STOP_GRACE_S = 2.0
THREAD_JOIN_S = 5.0
VERSION = f"mergenet/{MERGENET_VERSION}"


def read_node_file(home: Path) -> dict[str, Any] | None:
    """The running local node's {"pid", "addr", "dht_maddrs"}, or None when none runs."""
    try:
        info = json.loads((home / NODE_FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


class Node:
    """:param services: the gRPC services to serve (default `DEFAULT_SERVICES`; test launchers
    pass others, e.g. a Transfer servicer that tampers with what it sends)."""

    def __init__(self, config: NodeConfig, services: Sequence[ServiceSpec] | None = None) -> None:
        from node.process.services import DEFAULT_SERVICES
        from registry.home import Home

        self.config = config
        self.home = Home(config.home).ensure()
        self._services = tuple(services if services is not None else DEFAULT_SERVICES)
        self._stop = threading.Event()
        self._server: NodeServer | None = None
        self._threads: list[threading.Thread] = []
        self._log_handler: logging.Handler | None = None
        self._lock = HomeLock(config.home)
        self._web: list[Any] = []  # the metrics endpoint and the status page, when configured
        self.discovery: Any = None  # node.network.discovery.Discovery when the DHT is on
        self.addr = ""
        self.view: LocalView
        self.network: Network
        self.plans: Any  # node.plans.service.PlanService

    def start(self) -> None:
        from node.plans.service import PlanService
        from registry.identity import Identity

        self._lock.acquire()  # before anything touches the home's log, store or node file
        try:
            check_port_free(self.config.listen)
        except NodeError:
            self._lock.release()
            raise
        self._log_to_file()
        identity, _ = Identity.load_or_create(self.home)
        self.view = LocalView.open(self.home)
        host, _ = parse_hostport(self.config.listen, "--listen")
        # The DHT forks a child process; fork before gRPC starts its threads.
        if self.config.dht:
            from node.network.discovery import Discovery

            self.discovery = Discovery.start(host=host, initial_peers=self._dht_bootstrap())
        try:
            token = new_token()  # saved once the port is ours, so a failed start leaves the old one
            self._server = NodeServer.bind(self.config.listen, interceptors=[OperatorGate(token)])
            save_token(self.home.root, token)
            self.addr = self.config.advertised_addr(self._server.port)
            peers = PeerTable(self_addr=self.addr)
            for peer in self.config.peers:
                peers.add(peer, source="flag")
            self.network = Network(PeerRef(self.addr, identity.key_id, VERSION), self.view, peers, self.discovery)
            self.plans = PlanService(self.home.root, identity, self.network, self.addr)
            self._server.add(self._services, self)
            self._start_web()
            self._server.start()
        except BaseException:
            self._stop_web()
            self._server = None
            self._stop_discovery()
            self._detach_log()
            self._lock.release()
            raise
        self._spawn("announce", self._announce_loop)
        self._spawn("plans", lambda: self.plans.run(self._stop))
        self._write_node_file()
        log.info("node %s started, listening on %s (DHT %s)", identity.key_id[:16], self.addr,
                 self.dht_maddrs or "off", extra={"key_id": identity.key_id, "peer": self.addr})

    def _start_web(self) -> None:
        from node.process.metrics import MetricsServer
        from node.process.status_page import StatusPage

        if self.config.metrics:
            self._web.append(MetricsServer.start(self, self.config.metrics))
        if self.config.status:
            self._web.append(StatusPage.start(self, self.config.status))

    def _stop_web(self) -> None:
        while self._web:
            self._web.pop().stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def dht_maddrs(self) -> list[str]:
        return self.discovery.maddrs() if self.discovery is not None else []

    def _dht_bootstrap(self) -> list[str]:
        """Explicit --initial-peers, plus the DHT addresses each --peers node tells us."""
        from node.network.client import network_info

        maddrs = list(self.config.initial_peers)
        for peer in self.config.peers:
            try:
                maddrs += list(network_info(peer, timeout=5.0).dht_maddrs)
            except NodeError as exc:
                log.warning("could not ask %s for its DHT addresses: %s", peer, exc)
        return maddrs

    def _announce_loop(self) -> None:
        """A full round every ANNOUNCE_PERIOD_S or when our models change; in between, woken
        early, only the peers met since are greeted (a newcomer must not cost a round to all)."""
        net = self.network
        next_full = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_full or net.full_round_wanted():
                    # Set first: a round that raises must wait a period too, not spin.
                    next_full = time.monotonic() + ANNOUNCE_PERIOD_S
                    net.announce_once()
                else:
                    net.greet_newcomers()
            except Exception:  # one bad round must not end announcing; the traceback goes to the log
                log.exception("announce round failed")
            net.announce_now.wait(max(0.0, next_full - time.monotonic()))
            net.announce_now.clear()

    def _write_node_file(self) -> None:
        info = {"pid": os.getpid(), "addr": self.addr, "dht_maddrs": self.dht_maddrs,
                **{web.name: web.addr for web in self._web}}
        tmp = self.home.root / (NODE_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.home.root / NODE_FILE)

    @property
    def log_path(self) -> Path:
        """The node's JSON-lines log (rotated; see node.process.logs)."""
        return self.home.logs_dir / LOG_FILE

    def _log_to_file(self) -> None:
        self._log_handler = attach_file_log(self.log_path)

    def run_until_signal(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Serve until a signal; then stop cleanly, or hard within STOP_DEADLINE_S (see shutdown)."""
        StopWatchdog(on_first=self._stop.set).install(signals)
        while not self._stop.wait(0.5):
            pass
        self.stop()

    def stop(self) -> None:
        """Announce leaving, stop serving, end the loops, reap the DHT child; safe to call twice."""
        if self._server is None:
            return
        self._stop.set()
        self.network.announce_now.set()
        for thread in self._threads:  # a running announce round finishes before the DHT goes
            thread.join(THREAD_JOIN_S)
        self._threads.clear()
        if self.discovery is not None:
            self.discovery.leave(self.view.ids())
        say_goodbye(self.network.self_ref, self.network.peers)
        self._stop_web()
        self._server.stop(STOP_GRACE_S)
        self._server = None
        self._stop_discovery()
        (self.home.root / NODE_FILE).unlink(missing_ok=True)
        log.info("node %s stopped", self.addr, extra={"peer": self.addr})
        self._detach_log()
        self._lock.release()

    def _detach_log(self) -> None:
        if self._log_handler is not None:
            detach(self._log_handler)
            self._log_handler = None

    def _stop_discovery(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
