"""DHT discovery: a hivemind DHT peer in its own process, announcing this node and its models.

    disc = Discovery.start(host="127.0.0.1", initial_peers=[...])   # before the gRPC server
    disc.announce(NodeRecord(...), model_ids)                         # every ANNOUNCE_PERIOD_S
    disc.find_nodes(); disc.find_holders(model_id); disc.stop()

Records (small values; checkpoints never travel through the DHT), each protected by hivemind's
`RSASignatureValidator` with the owner marker in the SUBKEY, so only the owner can write them:
- `NODES_KEY`, subkey = owner marker → {"addr", "key_id", "version", "capacity", "models"}
- `holders_key(model_id)`, subkey = owner marker → the holder's gRPC address

The peer runs in `python -m node.network.dht_child`, a fresh interpreter started here (which
starts p2pd), spoken to in JSON lines over a socket pair; see that module. The node itself
never imports hivemind, nor the torch hivemind imports: an idle node does not carry them, and
a forked child does not copy the node's pages as it runs. The child dies with the node
(PR_SET_PDEATHSIG, a SIGTERM handler that kills p2pd, a watchdog on the parent pid).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.network.dht_records import NODES_KEY, RECORD_EXPIRY_S, NodeRecord, holders_key

log = logging.getLogger(__name__)

DHT_CALL_TIMEOUT_S = 10.0
# Starting the peer: a fresh interpreter importing hivemind (and torch), p2pd, the bootstrap.
DHT_START_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 3.0
# The folder holding the `node` package: the child must run this very code, whatever the cwd.
_CODE_ROOT = str(Path(__file__).resolve().parents[2])


class Discovery:
    """A running DHT peer plus the announce/lookup calls the node needs."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self._proc = proc
        self._sock = sock
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self.marker = ""  # this peer's owner marker: the subkey its records are stored under
        self._ready: Future = Future()
        threading.Thread(target=self._read_replies, daemon=True, name="dht-replies").start()

    @classmethod
    def start(cls, host: str = "127.0.0.1", initial_peers: Sequence[str] = ()) -> Discovery:
        """Start the DHT child process and wait until it serves; call before starting gRPC."""
        loopback = host.startswith("127.") or host == "localhost"
        bind = "127.0.0.1" if loopback else "0.0.0.0"
        config = {"initial_peers": list(initial_peers), "host_maddrs": [f"/ip4/{bind}/tcp/0"],
                  "nat_port_map": not loopback}
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_CODE_ROOT, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "node.network.dht_child", str(theirs.fileno()),
                                     str(os.getpid()), json.dumps(config)],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        disc = cls(proc, ours)
        try:
            ready = disc._ready.result(timeout=DHT_START_TIMEOUT_S)
        except Exception as exc:
            disc.stop()
            raise NodeError(f"could not start the DHT peer (initial peers {list(initial_peers)}): {exc}") from exc
        disc.marker = ready["marker"]
        return disc

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def is_alive(self) -> bool:
        return self._proc.poll() is None and not self._closed

    def _read_replies(self) -> None:
        """Hand each reply line to the call waiting for it; when the child is gone, fail them all."""
        with contextlib.suppress(OSError, ValueError), self._sock.makefile("rb") as lines:
            for line in lines:
                reply = json.loads(line)
                if "id" not in reply:  # the unasked first line: ready, or why not
                    if "error" in reply:
                        self._ready.set_exception(NodeError(reply["error"]))
                    else:
                        self._ready.set_result(reply)
                    continue
                with self._send_lock:
                    future = self._pending.pop(reply["id"], None)
                if future is None:
                    continue  # its caller gave up waiting
                if "error" in reply:
                    future.set_exception(NodeError(f"the DHT peer failed: {reply['error']}"))
                else:
                    future.set_result(reply)
        gone = NodeError(f"the DHT child process (pid {self._proc.pid}) is not running")
        with self._send_lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
        for future in [*pending, self._ready]:
            with contextlib.suppress(Exception):
                future.set_exception(gone)

    def _call(self, op: str, timeout: float = DHT_CALL_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        """One request to the child; NodeError when it is gone or fails, TimeoutError when slow."""
        future: Future = Future()
        with self._send_lock:
            if self._closed or self._proc.poll() is not None:
                raise NodeError(f"the DHT child process (pid {self._proc.pid}) is not running")
            key = next(self._ids)
            self._pending[key] = future
            try:
                self._sock.sendall(json.dumps({"id": key, "op": op, **args}).encode() + b"\n")
            except OSError as exc:
                self._pending.pop(key, None)
                raise NodeError(f"the DHT child process (pid {self._proc.pid}) is not running: {exc}") from None
        try:
            return future.result(timeout=timeout)
        finally:
            with self._send_lock:
                self._pending.pop(key, None)

    def maddrs(self) -> list[str]:
        return list(self._call("maddrs")["maddrs"])

    def announce(self, record: NodeRecord, model_ids: Sequence[str] = ()) -> None:
        """(Re)publish this node's record and holder entries; best effort, logs failures."""
        try:
            self._store(NODES_KEY, record.to_value(), RECORD_EXPIRY_S)
            for model_id in model_ids:
                self._store(holders_key(model_id), record.addr, RECORD_EXPIRY_S)
        except Exception as exc:  # a DHT hiccup must not take the node down
            log.warning("DHT announce failed: %s", exc)

    def _store(self, key: str, value: Any, ttl: float) -> bool:
        """One bounded store, valid for `ttl` seconds: a DHT child that died never answers, and
        must not block the node."""
        return bool(self._call("store", key=key, value=value, ttl=ttl)["ok"])

    def leave(self, model_ids: Sequence[str] = ()) -> None:
        """Overwrite our records with tombstones so peers stop listing us at once.

        The DHT keeps the entry with the latest expiration, so a tombstone must outlive the last
        announcement; readers skip tombstones.
        """
        try:
            self._store(NODES_KEY, {"left": True}, RECORD_EXPIRY_S + 1.0)
            for model_id in model_ids:
                self._store(holders_key(model_id), "", RECORD_EXPIRY_S + 1.0)
        except Exception as exc:
            log.warning("DHT leave announcement failed: %s", exc)

    def _subvalues(self, key: str) -> list[Any]:
        """The unexpired values stored under `key` by any peer (one per owner marker)."""
        try:
            return list(self._call("find", key=key)["values"])
        except Exception as exc:  # a dead or slow DHT child: no answer, not a crash
            log.warning("DHT lookup of %s failed: %s", key, exc)
            return []

    def find_nodes(self) -> list[NodeRecord]:
        """Every node currently announced in the DHT (ours included); malformed records skipped."""
        records = [NodeRecord.from_value(v) for v in self._subvalues(NODES_KEY)]
        return [r for r in records if r is not None]

    def find_holders(self, model_id: str) -> list[str]:
        return sorted({v for v in self._subvalues(holders_key(model_id)) if isinstance(v, str) and v})

    def stop(self) -> None:
        """Shut the DHT child (and its p2pd) down; kill it if it does not go in time."""
        import psutil

        try:
            kids = psutil.Process(self._proc.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        try:
            self._call("shutdown", timeout=SHUTDOWN_TIMEOUT_S)
        except Exception as exc:
            log.warning("DHT shutdown failed: %s", exc)
        try:
            self._proc.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(SHUTDOWN_TIMEOUT_S)
        self._sock.close()
        for kid in kids:  # p2pd of a DHT child that died without cleaning up
            with contextlib.suppress(psutil.Error):
                kid.kill()
