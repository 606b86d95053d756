"""Bring a plan's models into a job's work folder: from the local store when held, else pulled
from the holders the network knows (verified before use, and then held and advertised here too).

    path = fetch_model(model_id, home, work / "inputs" / "ab12…", holders=["127.0.0.1:7471"], peers=table)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from node.network.peers import PeerTable

ProgressFn = Callable[[int, int], None]


def fetch_model(model_id: str, home: Path, dest: Path, holders: Sequence[str], peers: PeerTable | None = None,
                progress: ProgressFn | None = None) -> Path:
    """A verified folder of `model_id` at `dest` (replacing a leftover from an earlier try)."""
    from node.transfer.pull import pull

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return pull(model_id, home, dest, sources=list(holders), node_addr=None, peers=peers, progress=progress).path
