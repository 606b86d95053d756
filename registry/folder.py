"""Walk a model folder safely and list what a signature covers.

    scan = scan_folder(Path("my-expert"))   # FolderScan or BadModelError naming the file
    scan.files, scan.weights, scan.config

Refused anywhere in the folder: symlinks, special files, names that are not plain relative
POSIX paths, and pickled checkpoints (*.bin *.pt *.pth *.pkl *.ckpt — listed, never opened).
Skipped as model-signing does: the top-level `.git`, `.github`, `.gitattributes`,
`.gitignore` and `model.sig`. A usable folder has a parseable config.json with a model_type
and at least one *.safetensors file; a PEFT LoRA adapter folder has an adapter_config.json
(peft_type LORA) instead, and its model_type is `ADAPTER_MODEL_TYPE`.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from registry.errors import BadModelError

SIGNATURE_FILE = "model.sig"
MANIFEST_FILE = "mergenet.json"
CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_MODEL_TYPE = "peft-lora"  # the manifest's model_type for a LoRA adapter
ADAPTER_PEFT_TYPE = "LORA"
IGNORE_PATHS = (SIGNATURE_FILE, ".gitignore", ".gitattributes", ".github", ".git")  # model-signing's order
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHT_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class FolderScan:
    root: Path
    files: tuple[str, ...]  # every signed file, sorted relative POSIX paths (manifest included if present)
    weights: tuple[str, ...]  # the *.safetensors among them
    config: dict[str, Any]  # config.json, or adapter_config.json for an adapter
    is_adapter: bool = False

    @property
    def model_type(self) -> str:
        return ADAPTER_MODEL_TYPE if self.is_adapter else str(self.config["model_type"])

    def path(self, rel: str) -> Path:
        return self.root.joinpath(*rel.split("/"))


def check_relpath(name: str, what: str = "file name") -> str:
    """A stored or received name must be a plain relative POSIX path; BadModelError otherwise."""
    if not isinstance(name, str) or not name:
        raise BadModelError(f"empty {what}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadModelError(f"{what} {name!r} is not valid UTF-8; rename the file") from None
    if any(ord(c) < 32 or c in "\\\x7f" for c in name):
        raise BadModelError(f"{what} {name!r} contains a backslash or control character")
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("/"):
        raise BadModelError(f"{what} {name!r} is an absolute path; only paths inside the model folder are allowed")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadModelError(f"{what} {name!r} contains '..', '.' or an empty component")
    return name


def is_ignored(rel: str, ignore: tuple[str, ...] = IGNORE_PATHS) -> bool:
    """model-signing ignores these paths, relative to the model root, and everything below them."""
    return any(rel == p or rel.startswith(p + "/") for p in ignore)


def is_pickle(rel: str) -> bool:
    return rel.lower().endswith(PICKLE_SUFFIXES)


def list_files(root: Path, ignore: tuple[str, ...] = IGNORE_PATHS, refuse_pickles: bool = True) -> list[str]:
    """Every regular file under `root` that a signature covers, refusing anything unsafe.
    Verification lists pickles instead of refusing them, so they show up as unsigned extras."""
    try:
        st = os.lstat(root)
    except OSError:
        raise BadModelError(f"model folder {root} does not exist or cannot be read") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadModelError(f"model folder {root} is a symlink; pass the real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise BadModelError(f"{root} is not a folder; pass a Hugging Face style model folder")
    found: list[str] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel_dir if rel_dir else root), key=lambda e: e.name)
        except OSError as exc:
            raise BadModelError(f"cannot list {root / rel_dir}: {exc.strerror}") from None
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if is_ignored(rel, ignore):
                continue
            check_relpath(rel)
            if entry.is_symlink():
                raise BadModelError(f"{rel} is a symlink; copy the real file into the model folder instead")
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)
            elif not entry.is_file(follow_symlinks=False):
                raise BadModelError(f"{rel} is not a regular file (device, socket or pipe)")
            elif refuse_pickles and is_pickle(rel):
                raise BadModelError(f"{rel} is a pickled checkpoint; mergenet accepts only *.safetensors "
                                    "weights (convert it, and remove the file)")
            else:
                found.append(rel)
    return sorted(found)


def _read_json(root: Path, name: str) -> Any:
    try:
        return json.loads((root / name).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadModelError(f"{name} in {root} does not parse as JSON: {exc}") from None
    except OSError as exc:
        raise BadModelError(f"{name} in {root} cannot be read: {exc.strerror}") from None


def read_config(root: Path) -> dict[str, Any]:
    if not (root / CONFIG_FILE).exists():
        raise BadModelError(f"{CONFIG_FILE} is missing from {root}; a model folder needs an HF config")
    config = _read_json(root, CONFIG_FILE)
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise BadModelError(f"{CONFIG_FILE} in {root} has no string model_type field")
    return config


def read_adapter_config(root: Path) -> dict[str, Any]:
    config = _read_json(root, ADAPTER_CONFIG_FILE)
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != ADAPTER_PEFT_TYPE:
        raise BadModelError(f"{ADAPTER_CONFIG_FILE} in {root} must have peft_type {ADAPTER_PEFT_TYPE!r}: only "
                            "LoRA adapters are supported")
    return config


def scan_folder(root: Path) -> FolderScan:
    """List and sanity-check a model folder (headers are checked separately, before hashing)."""
    root = Path(root)
    files = list_files(root)
    is_adapter = CONFIG_FILE not in files and ADAPTER_CONFIG_FILE in files
    config = read_adapter_config(root) if is_adapter else read_config(root)
    weights = tuple(f for f in files if f.endswith(WEIGHT_SUFFIX))
    if not weights:
        raise BadModelError(f"{root} has no *.safetensors weights")
    return FolderScan(root=root, files=tuple(files), weights=weights, config=config, is_adapter=is_adapter)
