"""What every command handler gets: the resolved home, `--json` mode, output and progress.

A client command proves it is the operator of the node running on its home by sending the
home's token (`Context.node_credential`) to that node's address as `node.json` records it. Any
other address gets nothing, so a node of another home never learns the token, and its
operator-only calls (plan propose, plan consent, the submit notice) refuse the command: a
PeerError, exit 1, since the command was fine and a peer said no.

Library code reports progress through a plain `progress(done, total)` callback; only this
module draws bars (on stderr, so `--json` output on stdout stays one clean document).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import NodeError

if TYPE_CHECKING:  # grpc loads only for the commands that talk to a node
    from node.network.client import Metadata

DEFAULT_HOME = "~/.mergenet"
HOME_ENV = "MERGENET_HOME"
NODE_ENV = "MERGENET_NODE"
DEFAULT_NODE = "127.0.0.1:7470"

ProgressFn = Callable[[int, int], None]


def resolve_home(flag: str | None) -> Path:
    """`--home`, else `$MERGENET_HOME`, else `~/.mergenet`."""
    raw = flag or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def resolve_node(flag: str | None, home: Path | None = None) -> str:
    """`--node`, else `$MERGENET_NODE`, else the node running on `home` (its `node.json`, which
    `node start` writes and removes), else the default local node address."""
    if flag or os.environ.get(NODE_ENV):
        return flag or os.environ[NODE_ENV]
    if home is not None:
        from node.process.daemon import read_node_file

        info = read_node_file(home)
        if info:
            return str(info["addr"])
    return DEFAULT_NODE


def split_csv(text: str | None) -> tuple[str, ...]:
    """A comma-separated flag value → its non-empty items."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


@dataclass
class Context:
    home: Path
    json: bool
    verbose: bool = False

    def emit(self, data: Any, text: str | None = None) -> None:
        """Print a result: one JSON document with `--json`, else the human text."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        elif text is not None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def node_addr(self, flag: str | None) -> str:
        """The local node a client command talks to (see `resolve_node`)."""
        return resolve_node(flag, self.home)

    def node_credential(self, addr: str) -> Metadata:
        """The operator token as call metadata when `addr` is the node running on this home (the
        address in its node.json), else nothing; NodeError when that node's token file is unusable."""
        from node.network.client import operator_metadata
        from node.process.daemon import read_node_file

        info = read_node_file(self.home)
        if not info or info.get("addr") != addr:
            return ()
        return operator_metadata(self.home)

    def notify_node(self, addr: str, model_id: str) -> bool:
        """Tell the node at `addr` that a model was just stored in this home, so it advertises it now.
        Best effort, it never fails the command: False when no node listens, the node belongs to
        another home, or this home's token file is unusable (said on stderr)."""
        from node.network.remote import notify_submitted

        try:
            credential = self.node_credential(addr)
        except NodeError as exc:
            self.note(f"warning: {exc}")
            return False
        return notify_submitted(addr, model_id, credential)

    def note(self, text: str) -> None:
        """Human-facing remarks that are not results: stderr, so stdout stays parseable."""
        sys.stderr.write(text.rstrip("\n") + "\n")

    @contextmanager
    def progress(self, desc: str, unit: str = "it", unit_scale: bool = False) -> Iterator[ProgressFn]:
        """A `progress(done, total)` callback drawing a tqdm bar on stderr (hidden if not a tty)."""
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr,
                   disable=not sys.stderr.isatty() or os.environ.get("MERGENET_NO_PROGRESS") == "1",
                   leave=False, dynamic_ncols=True)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()

        try:
            yield update
        finally:
            bar.close()
