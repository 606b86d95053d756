"""The operator credential: only the node's own operator may make it sign, submit or spend for them.

    token = new_token()                                         # node start, before serving
    NodeServer.bind(listen, interceptors=[OperatorGate(token)])
    save_token(home, token)                                     # HOME/operator.token, mode 0600
    stub.Propose(request, metadata=operator_metadata(home))    # a local client (node.network.client)

Peers reach every statement, gossip, transfer and read-only RPC. The methods in
`OPERATOR_METHODS` act for the operator (propose a plan under the node's key, sign a consent,
advertise what was submitted into the home), so they answer only callers that send the token of
the home as call metadata; anyone else gets PERMISSION_DENIED before the request is even
deserialized. A client reads the token from the home it shares with the node, which is how it
proves it is the operator; the token is issued afresh at every node start.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from node.errors import NodeError

log = logging.getLogger(__name__)

TOKEN_FILE = "operator.token"
# gRPC metadata keys are lowercase ASCII; this one carries the token on every operator call.
TOKEN_METADATA_KEY = "mergenet-operator-token"
# 32 random bytes (256 bits): unguessable, and short enough for one metadata value.
TOKEN_BYTES = 32
# Owner read/write only; a token file any other user can read or write is never used.
TOKEN_MODE = 0o600
LOOSE_BITS = stat.S_IRWXG | stat.S_IRWXO

# Full gRPC method name → what a refused caller was trying to do. Every entry is a unary call.
OPERATOR_METHODS: Mapping[str, str] = {
    "/mergenet.v1.Plans/Propose": "plan proposals",
    "/mergenet.v1.Plans/Decide": "consent decisions",
    "/mergenet.v1.Registry/Notify": "submit notices",
}


def denied_message(what: str) -> str:
    return f"this node accepts {what} only from its operator (the token in its home)"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def save_token(home: Path, token: str) -> Path:
    """Write HOME/operator.token atomically: a 0600 temporary file in the home replaces the old one,
    so no reader ever sees a partial token or a file with looser permissions."""
    fd, tmp = tempfile.mkstemp(dir=home, prefix=f".{TOKEN_FILE}.")  # created 0600, never wider
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), TOKEN_MODE)  # exactly 0600 whatever the umask
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, home / TOKEN_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return home / TOKEN_FILE


def read_token(home: Path) -> str:
    """The token of the node running on `home`; NodeError when it is missing, not a plain file,
    or readable or writable by other users (such a file is refused, never sent)."""
    path = home / TOKEN_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise NodeError(f"{path} does not exist: start this home's node (`mergenet node start`) "
                        "to issue its operator token") from None
    except OSError as exc:
        raise NodeError(f"cannot read the operator token {path}: {exc.strerror}") from None
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode) or mode & LOOSE_BITS:
            raise NodeError(f"refusing the operator token {path}: mode {stat.S_IMODE(mode):04o} lets other "
                            "users read or change it; restart the node to issue a new one (mode 0600)")
        token = f.read().strip()
    if not token:
        raise NodeError(f"the operator token {path} is empty; restart the node to issue a new one")
    return token


class OperatorGate(grpc.ServerInterceptor):
    """Lets a call to an `OPERATOR_METHODS` method through only with the node's token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        what = OPERATOR_METHODS.get(details.method)
        if what is None or self._holds_token(details.invocation_metadata or ()):
            return continuation(details)
        return _refusal(details.method, what)

    def _holds_token(self, metadata: Any) -> bool:
        # compare_digest: how long the comparison takes says nothing about how much of a guess matched
        return any(key == TOKEN_METADATA_KEY and hmac.compare_digest(_as_bytes(value), self._token)
                   for key, value in metadata)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "replace")


def _refusal(method: str, what: str) -> grpc.RpcMethodHandler:
    # No request deserializer: a refused request's bytes are never parsed.
    def refuse(request: bytes, context: grpc.ServicerContext) -> None:
        log.info("refused %s from %s: no operator token", method, context.peer())
        context.abort(grpc.StatusCode.PERMISSION_DENIED, denied_message(what))

    return grpc.unary_unary_rpc_method_handler(refuse)
