"""The whole-folder rule every verifier applies to a plan's result, before any tensor: the folder
holds exactly the files the recipe writes, every non-weight file byte for byte, every weight
file with the header (tensor names, dtypes, shapes, offsets) and size the writer gives it.

    why = folder_mismatch(folder, files={"config.json": b"…", …}, weights={"model.safetensors": (header, size)})
    weights = weight_layout(expected_folder)      # the same for a folder written as expected

Tensors are checked by sampling, so everything else must leave nothing to sample: a shipped
`modeling_*.py`, an `auto_map` that loads code, a rewritten chat template or a card with other
claims are each a difference in bytes that this rule finds. The registry's own files (the
signed manifest and the signature) are checked by the registry and `claims`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from registry.fingerprints import tokenizer_fingerprint
from registry.folder import MANIFEST_FILE, SIGNATURE_FILE, WEIGHT_SUFFIX

REGISTRY_FILES = (MANIFEST_FILE, SIGNATURE_FILE)
# Config keys by which transformers imports code (from the folder or another repository).
CODE_KEYS = ("auto_map", "trust_remote_code")
HEADER_PREFIX = 8  # a safetensors file starts with its header's length, u64 little-endian


def list_folder(folder: Path) -> list[str]:
    """Every file under `folder` as a relative POSIX path, sorted."""
    out = []
    for root, _dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [(rel / f).as_posix() for f in files]
    return sorted(out)


def read_header(path: Path) -> bytes:
    """The length prefix and JSON header of a safetensors file (empty if it has none)."""
    with open(path, "rb") as fh:
        prefix = fh.read(HEADER_PREFIX)
        if len(prefix) < HEADER_PREFIX:
            return prefix
        return prefix + fh.read(int.from_bytes(prefix, "little"))


def weight_layout(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Weight file → (header, size) of a folder written as expected (e.g. a fusion's reference)."""
    return {name: (read_header(folder / name), (folder / name).stat().st_size)
            for name in list_folder(folder) if name.endswith(WEIGHT_SUFFIX)}


def _code_key(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # not JSON: the byte comparison decides
    return next((k for k in CODE_KEYS if isinstance(doc, dict) and k in doc), None)


def folder_mismatch(folder: Path, files: Mapping[str, bytes], weights: Mapping[str, tuple[bytes, int]],
                    tokenizer_claim: str | None = None) -> str | None:
    """Why `folder` is not exactly `files` (name → bytes) plus `weights` (name → header, size), or
    None. `tokenizer_claim`: the manifest's tokenizer fingerprint, which must be the folder's."""
    folder = Path(folder)
    present = [f for f in list_folder(folder) if f not in REGISTRY_FILES]
    extra = sorted((f for f in present if f not in files and f not in weights),
                   key=lambda f: (not f.endswith(".py"), f))  # shipped code first: the worst of them
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return f"the result holds {extra[0]}{more}, a file the recipe does not write"
    for name in present:
        if name.endswith(".json") and (key := _code_key((folder / name).read_bytes())):
            return f"{name} names code to load ({key}); a merged model ships no code"
    missing = sorted((set(files) | set(weights)) - set(present))
    if missing:
        return f"the result lacks {missing[0]}, which the recipe writes"
    for name, data in sorted(files.items()):
        if (folder / name).read_bytes() != data:
            return f"{name} differs from what the recipe writes from its inputs"
    for name, (header, size) in sorted(weights.items()):
        if read_header(folder / name) != header:
            return f"{name} has other tensors (names, dtypes or shapes) than the recipe writes"
        if (folder / name).stat().st_size != size:
            return f"{name} is {(folder / name).stat().st_size} bytes, the recipe writes {size}"
    if tokenizer_claim != tokenizer_fingerprint(folder):
        return "the merged manifest's tokenizer_fingerprint is not that of the result's tokenizer"
    return None
