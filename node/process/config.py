"""Node configuration: one frozen `NodeConfig` built from the resolved settings, plus address parsing.

    cfg = NodeConfig(home=Path("~/.mergenet"), listen="127.0.0.1:0", peers=("10.0.0.2:7470",))

`from_settings` takes the values `node.process.settings` resolved (config file < environment,
which is how a container is configured < flags); a bare metrics or status `PORT` binds loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import NodeError, NodeInputError

DEFAULT_LISTEN = "127.0.0.1:7470"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
MAX_PORT = 65535
LOOPBACK = "127.0.0.1"  # the metrics endpoint and status page bind here unless given a host


def primary_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing); loopback if none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """`HOST:PORT` → (host, port); NodeInputError naming `what` when malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= MAX_PORT:
        raise NodeInputError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:7470)")
    return host.strip("[]"), int(port)


def check_port_free(listen: str) -> None:
    """NodeError in one sentence when `listen` cannot be bound (port taken, or not this machine's
    address): checked before the DHT child forks and before gRPC logs its own complaint."""
    import errno

    host, port = parse_hostport(listen, "--listen")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise NodeError(f"cannot listen on {listen}: {host!r} does not resolve ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no clash
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NodeError(f"cannot listen on {listen}: port {port} is already in use (another node? try "
                                f"--listen {host}:0 for a free port)") from None
            raise NodeError(f"cannot listen on {listen}: {exc.strerror}") from None


def local_listen(text: str, what: str) -> str:
    """`PORT` → `127.0.0.1:PORT` (loopback unless a host is given); `HOST:PORT` as is; "" stays off."""
    text = text.strip()
    if not text:
        return ""
    addr = f"{LOOPBACK}:{text}" if text.isdigit() else text
    parse_hostport(addr, what)
    return addr


def split_list(text: str | None) -> tuple[str, ...]:
    """Comma-separated flag value → tuple of non-empty items."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


@dataclass(frozen=True)
class NodeConfig:
    """Everything `Node` needs to run.

    :param home: the node's data directory (identity, store, index, logs)
    :param listen: gRPC listen address; port 0 picks a free port
    :param peers: gRPC addresses of known nodes (gossip; also where to learn the DHT's addresses)
    :param dht: run a hivemind DHT peer (off: discovery by `peers` gossip alone)
    :param initial_peers: DHT multiaddrs to join directly
    :param advertise: the gRPC address peers should use (default: the listen address, with a
        wildcard host replaced by this machine's primary address)
    :param metrics: HOST:PORT of the Prometheus endpoint ("" = off)
    :param status: HOST:PORT of the status web page ("" = off)
    """

    home: Path
    listen: str = DEFAULT_LISTEN
    peers: tuple[str, ...] = ()
    dht: bool = True
    initial_peers: tuple[str, ...] = ()
    advertise: str = ""
    metrics: str = ""
    status: str = ""

    def __post_init__(self) -> None:
        parse_hostport(self.listen, "--listen")
        for peer in self.peers:
            parse_hostport(peer, "--peers entry")
        if self.advertise:
            parse_hostport(self.advertise, "--advertise")
        for addr, what in ((self.metrics, "--metrics-port"), (self.status, "--status-port")):
            if addr:
                parse_hostport(addr, what)
        if self.initial_peers and not self.dht:
            raise NodeInputError("--initial-peers joins a DHT, which --no-dht turns off; drop one of the two")

    def advertised_addr(self, port: int) -> str:
        """What peers should dial: --advertise, else the listen host (wildcards resolved) and port."""
        if self.advertise:
            return self.advertise
        host, _ = parse_hostport(self.listen)
        if host in WILDCARD_HOSTS:
            host = primary_address()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @classmethod
    def from_settings(cls, home: Path, values: Mapping[str, Any]) -> NodeConfig:
        """From resolved settings (node.process.settings: config file < environment < flags)."""
        return cls(home=home, listen=values["listen"] or DEFAULT_LISTEN, peers=tuple(values["peers"]),
                   dht=values["dht"], initial_peers=tuple(values["initial_peers"]), advertise=values["advertise"],
                   metrics=local_listen(values["metrics_port"], "--metrics-port"),
                   status=local_listen(values["status_port"], "--status-port"))
