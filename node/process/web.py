"""What the node's small HTTP endpoints (metrics, status page) share: a server on its own thread,
the address it listens on, and a stop that waits for the thread.

    class StatusPage(WebEndpoint):
        name = "status"                    # its key in node.json
    page = StatusPage(server, thread, "127.0.0.1:7480")
    page.stop()
"""

from __future__ import annotations

import threading
from typing import Any


class WebEndpoint:
    name = ""  # its key in node.json

    def __init__(self, server: Any, thread: threading.Thread, addr: str) -> None:
        self._server = server
        self._thread = thread
        self.addr = addr

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
