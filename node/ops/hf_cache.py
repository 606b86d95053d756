"""Models from the local Hugging Face cache by name, offline: `org/name[@revision]` → a folder.

    cached = find_cached("org/name")            # NodeInputError (exit 2) when it was never downloaded
    cached = find_cached("org/name", "v1.0")    # a branch or tag the cache knows, or a commit (prefix)
    folder, skipped = copy_snapshot(cached, home / "hf" / cached.folder_name)
    repo, revision = split_revision("org/name@v1.0")

A merge reads `cached.path`, the snapshot itself (it only reads); `submit` copies it first.

The cache is found by huggingface_hub's own scanner (`scan_cache_dir`, honouring HF_HOME /
HF_HUB_CACHE); nothing is downloaded. A snapshot's files are symlinks into the cache's blobs,
which `submit` refuses, and `submit` writes mergenet.json and model.sig into the folder it
signs, so the snapshot is copied (the real bytes) into a new folder and the cache is only ever
read. Pickled checkpoints beside the safetensors are left out of the copy, never opened.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeInputError
from registry.folder import is_pickle

# `org/name[@revision]` as model cards write Hub models (a local path that exists always wins);
# recipes also name the Hub's few org-less models (`gpt2`) bare.
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
REPO_ID = re.compile(rf"^(?P<org>{_NAME}/)?{_NAME}(@[A-Za-z0-9][A-Za-z0-9_./-]*)?$")
MAIN_REF = "main"
MIN_COMMIT_PREFIX = 7  # as git abbreviates commits


def looks_like_repo_id(text: str, bare: bool = False) -> bool:
    """`org/name[@revision]` (with `bare`, also `name[@revision]`) that is not an existing path
    (`./org/name` or an existing folder stay paths)."""
    m = REPO_ID.match(text)
    return bool(m) and (bare or m["org"] is not None) and not Path(text).exists() and ".." not in text


def split_revision(text: str) -> tuple[str, str | None]:
    """`org/name@rev` → ("org/name", "rev"); without `@`, the revision is None."""
    repo, _, rev = text.partition("@")
    return repo, rev or None


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    commit: str
    path: Path  # the snapshot folder

    @property
    def folder_name(self) -> str:
        return f"{self.repo_id.replace('/', '--')}-{self.commit[:12]}"


def find_cached(repo_id: str, revision: str | None = None, cache_dir: Path | None = None) -> CachedModel:
    """The snapshot of `repo_id` at `revision` (a ref the cache records, or a commit or its
    prefix); without one, the snapshot the `main` ref names, else the newest one."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: scanning never goes online
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import CacheNotFound

    where = cache_dir or Path(HF_HUB_CACHE)
    try:
        repos = scan_cache_dir(cache_dir).repos
    except CacheNotFound:
        repos = frozenset()
    repo = next((r for r in repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    if repo is None or not repo.revisions:
        raise NodeInputError(f"{repo_id} is not in the local Hugging Face cache ({where}); download it first "
                             f"(`huggingface-cli download {repo_id}`), or pass the model's folder")
    if revision is not None:
        found = [r for r in repo.revisions if revision in r.refs or r.commit_hash == revision
                 or (len(revision) >= MIN_COMMIT_PREFIX and r.commit_hash.startswith(revision))]
        if not found:
            raise NodeInputError(f"{repo_id}@{revision} is not in the local Hugging Face cache ({where}); download "
                                 f"it first (`huggingface-cli download {repo_id} --revision {revision}`)")
        snapshot = found[0]
    else:
        by_ref = [r for r in repo.revisions if MAIN_REF in r.refs]
        snapshot = by_ref[0] if by_ref else max(repo.revisions, key=lambda r: r.last_modified)
    return CachedModel(repo_id=repo_id, commit=snapshot.commit_hash, path=Path(snapshot.snapshot_path))


def copy_snapshot(model: CachedModel, dest: Path) -> tuple[Path, list[str]]:
    """Copy the snapshot's files (dereferenced) into `dest`, which must be new or empty; returns
    (dest, the pickled files left out). Built beside `dest` and renamed into place."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise NodeInputError(f"{dest} already exists and is not empty; pass --copy-to a new folder "
                             "(or submit that folder itself)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.copying-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    skipped = []
    try:
        for src in sorted(model.path.rglob("*")):
            rel = src.relative_to(model.path).as_posix()
            if src.is_dir():
                continue
            if is_pickle(rel):
                skipped.append(rel)
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)  # follows the snapshot's symlink: the blob's bytes, read only
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest, skipped
