"""What a job needs from its node, in one object: home, identity key id, address, device,
how to fetch a model (local store or holders) and how to announce new ones.

    ctx = JobContext(home, key_id, address=lambda: node.addr, holders=node.network.holders, ...)
    folder = ctx.fetch(model_id, work / "inputs")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.jobs.inputs import fetch_model
from node.network.peers import PeerTable
from registry.ids import ModelId


@dataclass(frozen=True)
class JobContext:
    """:param home: the node's home (registry, store, work folders under tmp/jobs)
    :param key_id: the node's identity key id (recorded as executor, seeds spot checks)
    :param address_fn: the node's gRPC address (known once the server listens)
    :param holders: model id → gRPC addresses of nodes holding it
    :param announce: tell the network about newly held model ids
    :param device: where merges and recomputations run (`auto`: CUDA when present)
    """

    home: Path
    key_id: str
    address_fn: Callable[[], str]
    holders: Callable[[str], Sequence[str]] = lambda _mid: ()
    announce: Callable[[list[str]], None] = lambda _ids: None
    peers: PeerTable | None = None
    device: str = "auto"

    @property
    def address(self) -> str:
        return self.address_fn()

    def work_dir(self, plan_id: str, what: str) -> Path:
        path = Path(self.home) / "tmp" / "jobs" / f"{plan_id.removeprefix('sha256:')[:16]}-{what}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fetch(self, model_id: str, dest_root: Path, first: Sequence[str] = ()) -> Path:
        """`model_id` as a verified folder `dest_root/<short id>` (local store, else holders)."""
        return self.fetcher(first)(ModelId.parse(model_id), Path(dest_root) / ModelId.parse(model_id).short)

    def fetcher(self, first: Sequence[str] = ()) -> Callable[[ModelId, Path], Path]:
        """A `node.ops.inputs.Fetch`: known holders first (`first`, then the DHT's), then the peers
        an announce round dials (ads of new models reach peers only once a minute; hearsay
        addresses beyond the round's few are not worth a call)."""

        def fetch(model_id: ModelId, dest: Path) -> Path:
            peers = self.peers.round_targets() if self.peers is not None else []
            holders = list(dict.fromkeys([*first, *self.holders(model_id), *peers]))
            return fetch_model(model_id, self.home, dest, holders, peers=self.peers)

        return fetch

    def manifest(self, model_id: str) -> dict[str, Any]:
        """The manifest of a model this node holds (after `fetch`)."""
        from registry.local import LocalRegistry

        registry = LocalRegistry(self.home)
        try:
            return json.loads(registry.get(model_id).manifest.to_json())
        finally:
            registry.close()
