"""Helpers shared by the registry tests (imported as a plain module: this folder is on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path


def store_blobs(home: Path) -> list[Path]:
    root = home / "store" / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def leftovers(home: Path, folder: Path | None = None) -> list[str]:
    """Anything a failed command must not leave behind: temp files, half-built folders."""
    found = [str(p) for p in (home / "tmp").rglob("*")] if (home / "tmp").exists() else []
    if folder is not None and folder.parent.exists():
        found += [str(p) for p in folder.parent.iterdir() if p.name.endswith((".incomplete", ".tmp"))
                  or ".tmp-" in p.name]
        if folder.exists():
            found += [str(p) for p in folder.iterdir() if ".tmp" in p.name]
    return found


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    assert lines[0].startswith("mergenet: error: ")
    return lines[0]


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
