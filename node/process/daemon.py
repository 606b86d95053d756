"""The contributor node process: DHT peer, gRPC server, announce loop, clean shutdown.

    node = Node(NodeConfig(home=path, listen="127.0.0.1:0"))
    node.start()            # DHT first (hivemind forks), then gRPC; writes home/node.json
    node.run_until_signal() # SIGINT/SIGTERM → stop(): announce leaving, stop gRPC, reap the DHT

`home/node.json` ({"pid", "addr", "dht_maddrs"}) lets client commands find the local node;
it is removed on a clean stop and ignored when its pid is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.network.dht_records import ANNOUNCE_PERIOD_S
from node.network.peers import PeerTable
from node.network.view import Network, say_goodbye
from node.process.config import NodeConfig, parse_hostport
from node.process.server import ServiceSpec, start_server
from registry.services.hooks import PeerRef
from registry.services.local_view import LocalView

log = logging.getLogger(__name__)

NODE_FILE = "node.json"
LOG_FILE = "node.log"
STOP_GRACE_S = 2.0
ANNOUNCER_JOIN_S = 5.0
VERSION = "mergenet/0.1.0"


def read_node_file(home: Path) -> dict[str, Any] | None:
    """The running local node's {"pid", "addr", "dht_maddrs"}, or None when none runs."""
    try:
        info = json.loads((home / NODE_FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


class Node:
    def __init__(self, config: NodeConfig) -> None:
        from node.process.services import DEFAULT_SERVICES
        from registry.home import Home

        self.config = config
        self.home = Home(config.home).ensure()
        self._services: list[ServiceSpec] = list(DEFAULT_SERVICES)
        self._stopped = threading.Event()
        self._server: Any = None
        self._health: Any = None
        self._announcer: threading.Thread | None = None
        self._log_handler: logging.Handler | None = None
        self.discovery: Any = None  # node.network.discovery.Discovery when the DHT is on
        self.addr = ""
        self.view: LocalView
        self.network: Network

    def add_service(self, spec: ServiceSpec) -> None:
        """Serve one more gRPC service (call before `start`)."""
        if self._server is not None:
            raise NodeError(f"cannot add service {spec.name} to a running node")
        self._services.append(spec)

    def start(self) -> None:
        from registry.identity import Identity

        self._log_to_file()
        identity, _ = Identity.load_or_create(self.home)
        self.view = LocalView.open(self.home)
        host, _ = parse_hostport(self.config.listen, "--listen")
        # The DHT forks a child process; fork before gRPC starts its threads.
        if self.config.dht:
            from node.network.discovery import Discovery

            self.discovery = Discovery.start(host=host, initial_peers=self._dht_bootstrap())
        try:
            peers = PeerTable()
            self.network = Network(PeerRef("", identity.key_id, VERSION), self.view, peers, self.discovery)
            self._server, self._health, port = start_server(self.config.listen, self._services, self)
        except BaseException:
            self._stop_discovery()
            raise
        self.addr = self.config.advertised_addr(port)
        peers.self_addr = self.addr
        self.network.self_ref = PeerRef(self.addr, identity.key_id, VERSION)
        for peer in self.config.peers:
            peers.add(peer, source="flag")
        self._write_node_file()
        self._announcer = threading.Thread(target=self._announce_loop, name="announce", daemon=True)
        self._announcer.start()
        log.info("node %s listening on %s (DHT %s)", identity.key_id[:16], self.addr, self.dht_maddrs or "off")

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
        while not self._stopped.is_set():
            try:
                self.network.announce_once()
            except Exception:  # one bad round must not end announcing
                log.exception("announce round failed")
            self.network.announce_now.wait(ANNOUNCE_PERIOD_S)
            self.network.announce_now.clear()

    def _write_node_file(self) -> None:
        info = {"pid": os.getpid(), "addr": self.addr, "dht_maddrs": self.dht_maddrs}
        tmp = self.home.root / (NODE_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.home.root / NODE_FILE)

    def _log_to_file(self) -> None:
        handler = self._log_handler = logging.FileHandler(self.home.logs_dir / LOG_FILE)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
            for other in root.handlers:  # keep the console as quiet as the user asked
                if other is not handler and other.level == logging.NOTSET:
                    other.setLevel(logging.WARNING)

    def run_until_signal(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        for sig in signals:
            signal.signal(sig, lambda *_: self._stopped.set())
        while not self._stopped.wait(0.5):
            pass
        self.stop()

    def stop(self) -> None:
        """Announce leaving, stop serving, reap the DHT child; safe to call twice."""
        if self._server is None:
            return
        self._stopped.set()
        self.network.announce_now.set()
        if self._announcer is not None:  # let a running announce round finish before the DHT goes
            self._announcer.join(ANNOUNCER_JOIN_S)
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self.discovery is not None:
            self.discovery.leave(self.view.ids())
        say_goodbye(self.network.self_ref, self.network.peers)
        self._server.stop(STOP_GRACE_S).wait()
        self._server = None
        self._stop_discovery()
        (self.home.root / NODE_FILE).unlink(missing_ok=True)
        log.info("node %s stopped", self.addr)
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _stop_discovery(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
