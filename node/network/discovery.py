"""DHT discovery: a hivemind DHT peer in its own process, announcing this node and its models.

    disc = Discovery.start(host="127.0.0.1", initial_peers=[...])   # before the gRPC server
    disc.announce(NodeRecord(...), model_ids)                         # every ANNOUNCE_PERIOD_S
    disc.find_nodes(); disc.find_holders(model_id); disc.stop()

Records (small values; checkpoints never travel through the DHT), each protected by hivemind's
`RSASignatureValidator` with the owner marker in the SUBKEY, so only the owner can write them:
- `NODES_KEY`, subkey = owner marker → {"addr", "key_id", "version", "capacity", "models"}
- `holders_key(model_id)`, subkey = owner marker → the holder's gRPC address

hivemind forks its DHT child (which spawns p2pd). `_ReapingDHT` makes both die with the node:
the child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), turns SIGTERM
into "kill my children, exit", and a watchdog thread polling the parent pid covers the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import hivemind
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.utils.crypto import RSAPrivateKey
from hivemind.utils.timed_storage import get_dht_time

from node.errors import NodeError
from node.network.dht_records import NODES_KEY, RECORD_EXPIRY_S, NodeRecord, holders_key
from node.process.shutdown import kill_children

log = logging.getLogger(__name__)

DHT_CALL_TIMEOUT_S = 10.0
WATCHDOG_PERIOD_S = 0.25
PR_SET_PDEATHSIG = 1


def _kill_children_and_exit() -> None:
    """Kill every process this one started (p2pd), then exit at once."""
    kill_children()
    os._exit(0)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    _kill_children_and_exit()


class _ReapingDHT(hivemind.DHT):
    """hivemind.DHT whose child process (and its p2pd) never outlives the parent."""

    def run(self) -> None:
        parent = self._parent_pid
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the watchdog alone covers it
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda *_: _kill_children_and_exit())
        if os.getppid() != parent:  # the parent died between fork and prctl
            _kill_children_and_exit()
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watchdog").start()
        super().run()


class Discovery:
    """A running DHT peer plus the announce/lookup calls the node needs."""

    def __init__(self, dht: _ReapingDHT, validator: RSASignatureValidator) -> None:
        self._dht = dht
        self._marker = validator.local_public_key

    @classmethod
    def start(cls, host: str = "127.0.0.1", initial_peers: Sequence[str] = ()) -> Discovery:
        """Start the DHT child process and wait until it serves; call before starting gRPC."""
        # A key per Discovery (not hivemind's process-wide one): two peers must never share a marker.
        validator = RSASignatureValidator(RSAPrivateKey())
        loopback = host.startswith("127.") or host == "localhost"
        bind = "127.0.0.1" if loopback else "0.0.0.0"
        try:
            dht = _ReapingDHT(
                initial_peers=list(initial_peers) or None, start=True, record_validators=[validator],
                host_maddrs=[f"/ip4/{bind}/tcp/0"], nat_port_map=not loopback,
                await_ready=True, shutdown_timeout=3,
            )
        except Exception as exc:  # hivemind raises plain exceptions for bad multiaddrs or unreachable peers
            raise NodeError(f"could not start the DHT peer (initial peers {list(initial_peers)}): {exc}") from exc
        return cls(dht, validator)

    @property
    def pid(self) -> int | None:
        return self._dht.pid

    def maddrs(self) -> list[str]:
        return [str(m) for m in self._dht.get_visible_maddrs()]

    def announce(self, record: NodeRecord, model_ids: Sequence[str] = ()) -> None:
        """(Re)publish this node's record and holder entries; best effort, logs failures."""
        expires = get_dht_time() + RECORD_EXPIRY_S
        try:
            self._store(NODES_KEY, record.to_value(), expires)
            for model_id in model_ids:
                self._store(holders_key(model_id), record.addr, expires)
        except Exception as exc:  # a DHT hiccup must not take the node down
            log.warning("DHT announce failed: %s", exc)

    def _store(self, key: str, value: Any, expires: float) -> None:
        """One bounded store: a DHT child that died never answers, and must not block the node."""
        if not self._dht.is_alive():
            raise NodeError(f"the DHT child process (pid {self._dht.pid}) is not running")
        self._dht.store(key, value, expires, subkey=self._marker, return_future=True).result(
            timeout=DHT_CALL_TIMEOUT_S)

    def leave(self, model_ids: Sequence[str] = ()) -> None:
        """Overwrite our records with tombstones so peers stop listing us at once.

        The DHT keeps the entry with the latest expiration, so a tombstone must outlive the last
        announcement; readers skip tombstones.
        """
        expires = get_dht_time() + RECORD_EXPIRY_S + 1.0
        try:
            self._store(NODES_KEY, {"left": True}, expires)
            for model_id in model_ids:
                self._store(holders_key(model_id), "", expires)
        except Exception as exc:
            log.warning("DHT leave announcement failed: %s", exc)

    def _subvalues(self, key: str) -> list[Any]:
        if not self._dht.is_alive():
            log.warning("DHT lookup of %s skipped: the DHT child process is not running", key)
            return []
        try:
            found = self._dht.get(key, latest=True, return_future=True).result(timeout=DHT_CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("DHT lookup of %s failed: %s", key, exc)
            return []
        if found is None or not isinstance(found.value, dict):
            return []
        now = get_dht_time()
        return [item.value for item in found.value.values() if item.expiration_time > now]

    def find_nodes(self) -> list[NodeRecord]:
        """Every node currently announced in the DHT (ours included); malformed records skipped."""
        records = [NodeRecord.from_value(v) for v in self._subvalues(NODES_KEY)]
        return [r for r in records if r is not None]

    def find_holders(self, model_id: str) -> list[str]:
        return sorted({v for v in self._subvalues(holders_key(model_id)) if isinstance(v, str) and v})

    def stop(self) -> None:
        """Shut the DHT child (and its p2pd) down; kill it if it does not go in time."""
        import psutil

        pid = self._dht.pid
        try:
            kids = psutil.Process(pid).children(recursive=True) if pid else []
        except psutil.Error:
            kids = []
        try:
            self._dht.shutdown()
        except Exception as exc:
            log.warning("DHT shutdown failed: %s", exc)
        if self._dht.is_alive():
            self._dht.kill()
            self._dht.join(3)
        for kid in kids:  # p2pd of a DHT child that died without cleaning up
            with contextlib.suppress(psutil.Error):
                kid.kill()
