"""Node configuration: one frozen `NodeConfig` built from `node start` flags, plus address parsing.

    cfg = NodeConfig(home=Path("~/.mergenet"), listen="127.0.0.1:0", peers=("10.0.0.2:7470",))

`from_flags` takes a flag, else its environment variable (`ENV_VARS`: how a container is
configured), else the default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeInputError

DEFAULT_LISTEN = "127.0.0.1:7470"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK = "127.0.0.1"  # the metrics endpoint and status page bind here unless given a host
ENV_VARS = {"listen": "MERGENET_LISTEN", "peers": "MERGENET_PEERS", "advertise": "MERGENET_ADVERTISE",
            "metrics": "MERGENET_METRICS_PORT", "status": "MERGENET_STATUS_PORT"}


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
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NodeInputError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:7470)")
    return host.strip("[]"), int(port)


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
    def from_flags(cls, home: Path, listen: str | None, peers: str | None, dht: bool,
                   initial_peers: str | None, advertise: str | None = None, metrics: str | None = None,
                   status: str | None = None) -> NodeConfig:
        def pick(flag: str | None, name: str) -> str:
            return flag if flag is not None else os.environ.get(ENV_VARS[name], "")

        return cls(home=home, listen=pick(listen, "listen") or DEFAULT_LISTEN, peers=split_list(pick(peers, "peers")),
                   dht=dht, initial_peers=split_list(initial_peers), advertise=pick(advertise, "advertise"),
                   metrics=local_listen(pick(metrics, "metrics"), "--metrics-port"),
                   status=local_listen(pick(status, "status"), "--status-port"))
