"""What every command handler gets: the resolved home, `--json` mode, output and progress.

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
from typing import Any

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
