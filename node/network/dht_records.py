"""What nodes publish in the DHT: key names, timing constants and the `NodeRecord` value.

Kept apart from `node.network.discovery` so code that only reads records does not import hivemind
(and with it torch): a `--no-dht` node starts without either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.ids import ModelId

NODES_KEY = "mergenet/v1/nodes"
HOLDERS_PREFIX = "mergenet/v1/holders/"
# How often a node re-announces itself, and how long an announcement stays valid: a node that
# misses one announcement is still listed, a node that died disappears within two minutes.
ANNOUNCE_PERIOD_S = 60.0
RECORD_EXPIRY_S = 120.0
# Bounds on what one node may claim; a record beyond them is ignored as a whole.
MAX_MODELS_PER_RECORD = 4096
MAX_ADDR_LEN = 300


def holders_key(model_id: str) -> str:
    return HOLDERS_PREFIX + model_id


@dataclass(frozen=True)
class NodeRecord:
    """What a node announces about itself in the DHT."""

    addr: str
    key_id: str = ""
    version: str = ""
    capacity: dict[str, int] = field(default_factory=dict)
    models: tuple[str, ...] = ()

    def to_value(self) -> dict[str, Any]:
        return {"addr": self.addr, "key_id": self.key_id, "version": self.version,
                "capacity": dict(self.capacity), "models": list(self.models)}

    @classmethod
    def from_value(cls, value: Any) -> NodeRecord | None:
        """Parse a record from a peer; None when it is malformed (peers are untrusted)."""
        if not isinstance(value, dict) or not isinstance(value.get("addr"), str) or not value["addr"]:
            return None
        models = value.get("models", [])
        capacity = value.get("capacity", {})
        if not isinstance(models, list) or len(models) > MAX_MODELS_PER_RECORD:
            return None
        if not all(ModelId.valid(m) for m in models):
            return None
        if len(value["addr"]) > MAX_ADDR_LEN:
            return None
        if not isinstance(capacity, dict):
            return None
        return cls(addr=value["addr"], key_id=str(value.get("key_id", "")), version=str(value.get("version", "")),
                   capacity={str(k): int(v) for k, v in capacity.items() if isinstance(v, int)},
                   models=tuple(models))
