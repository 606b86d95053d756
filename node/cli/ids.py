"""Id prefixes on the command line: a model id or key id a user typed, made whole.

    model_id = resolve_model(ctx, "sha256:8add71e1", nodes=["127.0.0.1:7470"])
    key_id = resolve_signer(ctx, "3742ce6a9f47881c", nodes=[...])

A model prefix is matched against the local registry and the models the given nodes list
(their own and what they have seen advertised); a key id prefix against the trusted keys, this
home's key and the signers of those models. One match is the answer; several are exit 2
listing them; none says to give the full id. A node that does not answer only narrows the search.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from node.cli.context import Context
from node.errors import NodeInputError, PeerError
from registry.ids import ModelId

log = logging.getLogger(__name__)

KEY_ID_DIGITS = 64
MIN_KEY_PREFIX = 8


def _remote_models(nodes: Sequence[str]) -> list[dict]:
    from node.network.remote import list_remote

    rows: list[dict] = []
    for addr in nodes:
        try:
            rows += list_remote(addr)
        except PeerError as exc:  # no node: the local registry is all there is to search
            log.info("could not list models of %s: %s", addr, exc)
    return rows


def resolve_model(ctx: Context, text: str, nodes: Sequence[str] = ()) -> str:
    """The full model id `text` names (a full id is returned as it is, without asking anyone)."""
    from registry.index import pick_one
    from registry.local import LocalRegistry

    if ModelId.valid(text.strip()):
        return text.strip()
    registry = LocalRegistry(ctx.home)
    try:
        local = registry.index.matching(text)
    finally:
        registry.close()
    remote = [m["id"] for m in _remote_models(nodes)] if nodes else []
    where = "in the local registry" + (" or among the models the network advertises" if nodes else "")
    return pick_one(text, [*local, *remote], f"{where}; give the full id (sha256:<64 hex digits>, "
                                             "see `mergenet ls --remote`)")


def known_signers(ctx: Context, nodes: Sequence[str] = ()) -> set[str]:
    """Every key id this home has heard of: its own, trusted keys, local and advertised signers."""
    from registry.local import LocalRegistry

    registry = LocalRegistry(ctx.home)
    try:
        keys = {k.key_id for k in registry.trust.list()} | {r.signer for r in registry.index.list()}
        if registry.home.key_path.exists():
            keys.add(registry.identity().key_id)
    finally:
        registry.close()
    return keys | {m["publisher"] for m in _remote_models(nodes) if m.get("publisher")}


def pick_key(text: str, keys: Iterable[str]) -> str:
    """The one key id among `keys` starting with `text` (≥ MIN_KEY_PREFIX hex digits)."""
    want = text.strip().lower()
    if len(want) < MIN_KEY_PREFIX or any(c not in "0123456789abcdef" for c in want):
        raise NodeInputError(f"{text!r} is not a key id: give its {KEY_ID_DIGITS} hex digits or at least "
                             f"{MIN_KEY_PREFIX} of them")
    hits = sorted({k for k in keys if k.startswith(want)})
    if not hits:
        raise NodeInputError(f"no known signer has a key id starting with {text}; give the full "
                             f"{KEY_ID_DIGITS}-hex key id or a PEM public key file")
    if len(hits) > 1:
        raise NodeInputError(f"key id prefix {text} is ambiguous ({', '.join(hits)}); give more digits")
    return hits[0]


def resolve_signer(ctx: Context, text: str, nodes: Sequence[str] = ()) -> str:
    """The full key id a prefix names, among the signers this home knows (see `known_signers`)."""
    if len(text.strip()) == KEY_ID_DIGITS:
        return pick_key(text, [text.strip().lower()])
    return pick_key(text, known_signers(ctx, nodes))
