"""The DHT child process: one hivemind DHT peer, served to its node as JSON lines over a socket.

    python -m node.network.dht_child FD PARENT_PID CONFIG_JSON   # started by node.network.discovery only

A fresh interpreter (not a fork of the node), so hivemind and the torch it imports are loaded
here and never in the node, and the node's pages are not shared and then copied. The node
sends one JSON object per line, the child answers each with one line carrying the same "id":

- first, unasked: {"ready": true, "marker": "<owner marker>", "maddrs": [...]} or {"error": "..."}
- {"op": "store", "key", "value", "ttl"} → {"ok": bool}: stored under this peer's owner marker,
  signed by its RSASignatureValidator (so only this peer can overwrite it), valid for ttl seconds
- {"op": "find", "key"} → {"values": [...]}: the unexpired subvalues of a dictionary key, only
  those that are plain JSON (anything else a peer stored is dropped here)
- {"op": "maddrs"} → {"maddrs": [...]};  {"op": "shutdown"} → {"ok": true}, then the child exits

It dies with the node: the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG), SIGTERM
means "kill my children (p2pd), exit", and a watchdog thread polling the parent pid covers the
rest (a parent that died before the prctl, systems without prctl).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from node.process.shutdown import kill_children

log = logging.getLogger(__name__)

WATCHDOG_PERIOD_S = 0.25
PR_SET_PDEATHSIG = 1
# Longest request line the node sends (a NodeRecord lists at most MAX_MODELS_PER_RECORD ids).
MAX_REQUEST_BYTES = 16 << 20


def _kill_children_and_exit() -> None:
    """Kill every process this one started (p2pd), then exit at once."""
    kill_children()
    os._exit(0)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    _kill_children_and_exit()


def die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the watchdog alone covers it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: _kill_children_and_exit())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the node, which stops us
    if os.getppid() != parent_pid:  # the parent died before the prctl
        _kill_children_and_exit()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watchdog").start()


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


class _Peer:
    """The hivemind DHTNode and the requests the node may make of it."""

    def __init__(self, node: Any, marker: bytes) -> None:
        self.node = node
        self.marker = marker

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        from hivemind.utils.timed_storage import get_dht_time

        op = request.get("op")
        if op == "store":
            ok = await self.node.store(request["key"], request["value"], get_dht_time() + float(request["ttl"]),
                                       subkey=self.marker)
            return {"ok": bool(ok)}
        if op == "find":
            found = await self.node.get(request["key"], latest=True)
            if found is None or not isinstance(found.value, dict):
                return {"values": []}
            now = get_dht_time()
            return {"values": [item.value for item in found.value.values()
                               if item.expiration_time > now and _plain(item.value)]}
        if op == "maddrs":
            return {"maddrs": [str(m) for m in await self.node.get_visible_maddrs()]}
        if op == "shutdown":
            await self.node.shutdown()
            return {"ok": True}
        raise ValueError(f"unknown request {op!r}")


async def _serve(sock: socket.socket, config: dict[str, Any]) -> None:
    from hivemind.dht.crypto import RSASignatureValidator
    from hivemind.dht.node import DHTNode
    from hivemind.dht.validation import CompositeValidator
    from hivemind.utils.crypto import RSAPrivateKey

    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_REQUEST_BYTES)
    lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()

    # A key per peer (not hivemind's process-wide one): two peers must never share a marker.
    validator = RSASignatureValidator(RSAPrivateKey())
    try:
        node = await DHTNode.create(initial_peers=config["initial_peers"] or None,
                                    record_validator=CompositeValidator([validator]),
                                    host_maddrs=config["host_maddrs"], nat_port_map=config["nat_port_map"])
    except Exception as exc:  # bad multiaddrs, unreachable peers: the node reports it
        await send({"error": f"{type(exc).__name__}: {exc}"})
        return
    peer = _Peer(node, validator.local_public_key)
    maddrs = [str(m) for m in await node.get_visible_maddrs()]
    await send({"ready": True, "marker": peer.marker.decode(), "maddrs": maddrs})

    async def answer(request: dict[str, Any]) -> None:
        try:
            reply = await peer.handle(request)
        except Exception as exc:  # one failed lookup or store must not stop the peer
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        await send({"id": request.get("id"), **reply})

    tasks = set()
    while line := await reader.readline():
        request = json.loads(line)
        if request.get("op") == "shutdown":
            await answer(request)
            return
        task = asyncio.create_task(answer(request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # The node closed its end (it died or stopped): nobody is left to serve.
    with contextlib.suppress(Exception):
        await node.shutdown()


def main(argv: list[str]) -> None:
    fd, parent_pid, config = int(argv[0]), int(argv[1]), json.loads(argv[2])
    die_with_parent(parent_pid)
    sock = socket.socket(fileno=fd)
    from hivemind.utils import switch_to_uvloop

    loop = switch_to_uvloop()
    try:
        loop.run_until_complete(_serve(sock, config))
    finally:
        kill_children()  # p2pd, should hivemind have left it running


if __name__ == "__main__":
    main(sys.argv[1:])
