"""Recipe model references → local folders, and how provenance names them.

    resolver = InputResolver(registry_fetch(registry), scratch, base_dir=recipe_dir)   # local user
    resolver = InputResolver(ctx.fetch, work / "inputs", allow_paths=False)            # plan jobs
    folders = resolver.folders(recipe.model_refs())     # ref → folder
    inputs = identify_inputs(roles, resolver, registry) # InputRef per ref, for the manifest

A reference written as an id (`sha256:…`, or for the local user any unambiguous prefix) goes
through the `fetch` function: the local registry for CLI commands, the network for jobs. Paths
are opened only when `allow_paths` is set: a plan from a peer never makes a node open a path.
For the local user, a Hugging Face name (`org/name`, `org/name@revision`, or a bare `gpt2`) that
is not a folder is the snapshot in the local Hugging Face cache, read in place (node.ops.hf_cache; never
downloaded). `model+adapter` names a model and a LoRA adapter applied to it: each part
resolves on its own, and the pair becomes `folder+adapter_folder`, as merge/ reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from node.errors import NodeInputError
from node.ops.hf_cache import find_cached, looks_like_repo_id, split_revision
from registry.errors import RegistryError
from registry.ids import ModelId
from registry.provenance import InputRef

log = logging.getLogger(__name__)

Fetch = Callable[[ModelId, Path], Path]  # (model id, folder to create) → the verified folder
ADAPTER_SEP = "+"  # `model+adapter`, as mergekit writes a LoRA applied to a model
ADAPTER_ROLE = "adapter"


def split_adapter(ref: str) -> tuple[str, str | None]:
    """`model+adapter` → (model, adapter); a plain reference → (ref, None)."""
    model, sep, adapter = ref.partition(ADAPTER_SEP)
    return (model, adapter) if sep else (ref, None)


class Registry(Protocol):
    def resolve(self, id_or_prefix: str) -> str: ...
    def materialize(self, id_or_prefix: str, out_dir: Path) -> Path: ...
    def verify(self, id_or_dir: str | Path) -> object: ...


def registry_fetch(registry: Registry, note: Callable[[str], None] | None = None) -> Fetch:
    """Fetch from the local registry; a folder left by an earlier run of the same work dir is reused
    (it was verified when written, and `materialize` builds it beside its place before renaming)."""

    def fetch(model_id: ModelId, dest: Path) -> Path:
        if dest.is_dir() and any(dest.iterdir()):
            return dest
        if note is not None:
            note(f"materializing {model_id[:23]}… from the local registry")
        return Path(registry.materialize(model_id, dest))

    return fetch


class InputResolver:
    """Resolves each reference once and remembers which ones were ids."""

    def __init__(self, fetch: Fetch, scratch: Path, *, base_dir: Path | None = None, allow_paths: bool = True,
                 resolve_prefix: Callable[[str], str] | None = None) -> None:
        self._fetch = fetch
        self.scratch = Path(scratch)
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.allow_paths = allow_paths
        self._resolve_prefix = resolve_prefix
        self.ids: dict[str, ModelId] = {}
        self._folders: dict[str, Path] = {}

    def model_id(self, ref: str) -> ModelId | None:
        """The id a reference names (prefixes resolved), None for a path."""
        if ref in self.ids:
            return self.ids[ref]
        if not ModelId.looks_like(ref):
            return None
        full = self._resolve_prefix(ref) if self._resolve_prefix is not None else ref
        self.ids[ref] = ModelId.parse(full)
        return self.ids[ref]

    def folder(self, ref: str) -> Path:
        if ref not in self._folders:
            model_id = self.model_id(ref)
            if model_id is not None:
                self._folders[ref] = self._fetch(model_id, self.scratch / model_id.short)
            elif not self.allow_paths:
                raise NodeInputError(f"model reference {ref!r} is not a model id; a plan names models only by "
                                     "the sha256: ids in its inputs")
            else:
                path = Path(ref).expanduser()
                path = path if path.is_absolute() else self.base_dir / path
                if not path.exists() and looks_like_repo_id(ref, bare=True):
                    self._folders[ref] = find_cached(*split_revision(ref)).path
                else:
                    self._folders[ref] = path.resolve()
        return self._folders[ref]

    def folders(self, refs: Iterable[str]) -> dict[str, str]:
        """ref → folder path (as `Recipe.with_models` takes it); `model+adapter` → `folder+folder`."""
        out = {}
        for ref in refs:
            model, adapter = split_adapter(ref)
            out[ref] = str(self.folder(model)) + (ADAPTER_SEP + str(self.folder(adapter)) if adapter else "")
        return out


def identify_inputs(roles: Iterable[tuple[str, str]], resolver: InputResolver, registry: Registry | None,
                    ) -> Callable[[], tuple[InputRef, ...]]:
    """Start naming each (role, ref) for provenance and the model card; returns a function that
    waits for the answer. Ids are named as they are; a signed local folder by its verified id;
    an unsigned one by the sha256 of each weight file, hashed in a background thread while the
    caller merges (all unsigned files in one parallel `hash_files` call)."""
    from registry.hashing import hash_files

    roles = [part for role, ref in roles for part in _parts(role, ref)]
    known: dict[str, ModelId] = {}
    unsigned: dict[tuple[int, str], Path] = {}
    for i, (_, ref) in enumerate(roles):
        mid = resolver.model_id(ref)
        if mid is not None:
            known[ref] = mid
            continue
        folder = resolver.folder(ref)
        if registry is not None and (folder / "model.sig").is_file():
            try:
                known[ref] = ModelId.parse(str(registry.verify(folder).id))  # type: ignore[attr-defined]
                continue
            except RegistryError as exc:
                log.warning("%s: not recording its signature (%s); recording file digests instead", ref, exc)
        unsigned.update({(i, p.name): p for p in sorted(folder.glob("*.safetensors"))})

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="input-digests")
    digests: Future[Mapping[str, object]] = pool.submit(
        hash_files, {f"{i}/{name}": path for (i, name), path in unsigned.items()})
    pool.shutdown(wait=False)

    def result() -> tuple[InputRef, ...]:
        done = digests.result()
        out = []
        for i, (role, ref) in enumerate(roles):
            entries = [f"{name} sha256:{done[f'{j}/{name}'].sha256}"  # type: ignore[attr-defined]
                       for (j, name) in unsigned if j == i]
            out.append(InputRef(role, ref, known.get(ref), ", ".join(entries) or None))
        return tuple(out)

    return result


def _parts(role: str, ref: str) -> list[tuple[str, str]]:
    """A `model+adapter` reference is two inputs: the model in its role, and the adapter."""
    model, adapter = split_adapter(ref)
    return [(role, model)] + ([(ADAPTER_ROLE, adapter)] if adapter else [])
