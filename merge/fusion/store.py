"""Step outputs in the work dir: safetensors files tagged with the key of the inputs that made them.

A step is skipped when its file exists with the same key, which is what makes a fusion run
restartable: an interrupted run redoes only the steps whose outputs are missing or stale.

    key = step_key({"model": fingerprint(path), "top_k": 10})
    save_tensors({"x": t}, work / "x.safetensors", key)
    load_tensors(work / "x.safetensors", key)  # -> {"x": t}, or None when missing or stale
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

KEY_FIELD = "mergenet.fusion.key"


def step_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of everything a step's output depends on."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def model_fingerprint(path: Path) -> dict[str, Any]:
    """Cheap identity of a model folder (names, sizes, mtimes): hashing many GB on every run to
    decide whether to reuse a capture would cost more than the check is worth."""
    path = Path(path).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name not in ("mergenet.json", "model.sig"))
    return {"path": str(path), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def save_tensors(tensors: Mapping[str, torch.Tensor], path: Path, key: str,
                 meta: Mapping[str, Any] | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {KEY_FIELD: key, "meta": json.dumps(dict(meta or {}), sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_meta(path: Path, key: str) -> dict[str, Any] | None:
    """The JSON metadata saved with the tensors, or None when the file is missing or stale."""
    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    if metadata.get(KEY_FIELD) != key:
        return None
    return json.loads(metadata.get("meta", "{}"))


def load_tensors(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    if read_meta(path, key) is None:
        return None
    with safe_open(str(path), framework="pt") as fh:
        return {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
