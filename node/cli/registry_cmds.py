"""CLI commands of the registry: keygen, id, submit, verify, ls, show, trust.

    mergenet submit ./my-expert --tags math --license Apache-2.0 --policy consent
    mergenet verify sha256:ab12… --signer 3f9c…   # exit 3 on any mismatch

Network questions (`ls --remote`, `show` of an unknown id, telling the node about a submit)
go through `node.network.remote`, imported lazily so these commands work without a running node.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from node.cli.context import Context, resolve_node

log = logging.getLogger(__name__)

HF_COPIES_DIR = "hf"  # signed copies of models taken from the Hugging Face cache, in the home


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the registry commands to the parser."""
    p = sub.add_parser("keygen", parents=[common], help="create this home's ECDSA P-256 identity (idempotent)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("id", parents=[common], help="print this node's key id and public key")
    p.add_argument("--pem", action="store_true", help="print only the public key PEM, for other tools")
    p.set_defaults(func=cmd_id)

    p = sub.add_parser("submit", parents=[common], help="validate, hash, sign and register a model folder")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="Hugging Face style folder (config.json + *.safetensors), "
                                                         "or org/name of a model in the local Hugging Face cache")
    p.add_argument("--copy-to", metavar="DIR", help="with org/name: where the signed copy goes "
                                                    "(default HOME/hf/<org>--<name>-<commit>)")
    p.add_argument("--base", metavar="DIR_OR_ID", help="base model (signed folder or model id) the expert derives from")
    p.add_argument("--tags", default="", help="comma-separated tags, e.g. math,code")
    p.add_argument("--license", metavar="SPDX", help="SPDX license id, e.g. Apache-2.0")
    p.add_argument("--policy", choices=("open", "consent", "closed"), default="open",
                   help="merge policy: open, consent (publisher must sign a consent), closed (no derivatives)")
    p.add_argument("--name", help="model name (default: the folder name)")
    p.add_argument("--kind", choices=("base", "expert", "adapter"), default="expert",
                   help="base: a foundation model others fine-tune; expert (default): a fine-tuned model; "
                        "adapter: a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--node", help="node to tell about the new model (best effort)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("verify", parents=[common], help="check signature and every file hash (exit 3 on mismatch)")
    p.add_argument("target", metavar="ID_OR_DIR", help="a model id (or unique prefix) or a signed folder")
    p.add_argument("--signer", metavar="KEY_ID", help="require this signer (full key id or >= 8-digit prefix)")
    p.add_argument("--trusted-only", action="store_true", help="require a signer in the trusted-keys list")
    p.add_argument("--tensors", action="store_true", help="also recompute every per-tensor digest of the manifest")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("ls", parents=[common], help="list known models")
    p.add_argument("--kind", choices=("base", "expert", "merged", "adapter"))
    p.add_argument("--remote", action="store_true", help="ask the network (through the local node)")
    p.add_argument("--node", help="node to ask with --remote (default: $MERGENET_NODE or 127.0.0.1:7470)")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", parents=[common], help="print a manifest with its signature and attestations")
    p.add_argument("model_id", metavar="ID", help="model id or unique prefix (local or advertised)")
    p.add_argument("--node", help="node to ask when the id is not in the local registry")
    p.set_defaults(func=cmd_show)

    trust = sub.add_parser("trust", parents=[common], help="manage the trusted-keys list")
    tsub = trust.add_subparsers(dest="trust_command", metavar="SUBCOMMAND", required=True)
    p = tsub.add_parser("add", parents=[common], help="trust a publisher key")
    p.add_argument("key", metavar="KEY_ID_OR_PEM_FILE", help="key id (64 hex digits, or a prefix of a known "
                                                         "signer's), or a file holding a PEM public key")
    p.add_argument("--node", help="node whose advertised models' signers a key id prefix may name")
    p.set_defaults(func=cmd_trust_add)
    p = tsub.add_parser("ls", parents=[common], help="list trusted keys")
    p.set_defaults(func=cmd_trust_ls)
    p = tsub.add_parser("rm", parents=[common], help="stop trusting a key")
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_trust_rm)


def _registry(ctx: Context):
    from registry.local import LocalRegistry

    return LocalRegistry(ctx.home)


def cmd_keygen(args: argparse.Namespace, ctx: Context) -> int:
    from registry.home import Home
    from registry.identity import Identity

    ident, created = Identity.load_or_create(ctx.home)
    home = Home(ctx.home)
    ctx.emit({"key_id": ident.key_id, "created": created, "private_key": str(home.key_path),
              "public_key": str(home.public_key_path)},
             f"{'created' if created else 'existing'} identity {ident.key_id}\n  private key: {home.key_path}")
    return 0


def cmd_id(args: argparse.Namespace, ctx: Context) -> int:
    from registry.identity import Identity

    ident = Identity.load(ctx.home)
    if args.pem and not ctx.json:
        ctx.emit(None, ident.public_pem.decode())
        return 0
    ctx.emit({"key_id": ident.key_id, "public_key_pem": ident.public_pem.decode()},
             f"{ident.key_id}\n{ident.public_pem.decode()}")
    return 0


def cmd_submit(args: argparse.Namespace, ctx: Context) -> int:
    from node.ops.hf_cache import looks_like_repo_id

    folder, name = Path(args.model_dir), args.name
    if looks_like_repo_id(args.model_dir):
        folder = _copy_from_hf_cache(args.model_dir, args.copy_to, ctx)
        name = name or args.model_dir
    reg = _registry(ctx)
    try:
        with ctx.progress("hashing", unit="B", unit_scale=True) as progress:
            rec = reg.submit(folder, kind=args.kind, base=args.base, tags=args.tags.split(","),
                             license=args.license, policy=args.policy, name=name, progress=progress)
    finally:
        reg.close()
    notified = ctx.notify_node(resolve_node(args.node, ctx.home), rec.id)
    data = rec.to_dict(trusted=True)
    data["node_notified"] = notified
    ctx.emit(data, rec.id)
    return 0


def _copy_from_hf_cache(repo_id: str, copy_to: str | None, ctx: Context) -> Path:
    """A new folder holding the cached snapshot's files, which submit then signs (see node.ops.hf_cache)."""
    from node.ops.hf_cache import copy_snapshot, find_cached, split_revision

    cached = find_cached(*split_revision(repo_id))
    dest = Path(copy_to).expanduser().resolve() if copy_to else ctx.home / HF_COPIES_DIR / cached.folder_name
    folder, skipped = copy_snapshot(cached, dest)
    ctx.note(f"copied {repo_id} (commit {cached.commit[:12]}) from the Hugging Face cache to {folder}"
             + (f"; left out pickled {', '.join(skipped)}" if skipped else ""))
    return folder


def cmd_verify(args: argparse.Namespace, ctx: Context) -> int:
    reg = _registry(ctx)
    try:
        with ctx.progress("verifying", unit="B", unit_scale=True) as progress:
            v = reg.verify(args.target, signer=args.signer, trusted_only=args.trusted_only, deep=args.tensors,
                           progress=progress)
    finally:
        reg.close()
    trust = "trusted" if v.trusted else "not in the trusted-keys list"
    ctx.emit(v.to_dict(), f"OK {v.id}\n  {len(v.files)} files verified, signed by {v.signer} ({trust})")
    return 0


def _row(rec, trusted: bool) -> dict[str, Any]:
    m = rec.manifest
    return {"id": rec.id, "kind": m.kind, "name": m.name, "model_type": m.model_type, "signer": rec.signer,
            "signer_trusted": trusted, "policy": m.policy, "license": m.license, "tags": list(m.tags),
            "base_model": m.base_model, "size": rec.size, "attestations": len(rec.attestations)}


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    if args.remote:
        from node.network.remote import list_remote

        models = list_remote(resolve_node(args.node, ctx.home), args.kind)
        reg = _registry(ctx)
        try:
            for m in models:
                m["signer_trusted"] = reg.is_trusted(m.get("publisher", ""))
        finally:
            reg.close()
        lines = [f"{m['id'][:19]}  {m.get('kind', ''):6}  {m.get('name', '')}  "
                 f"{'trusted' if m['signer_trusted'] else 'untrusted'}  holders={len(m.get('holders', []))}"
                 for m in models]
        ctx.emit({"models": models}, "\n".join(lines) if lines else "no models in the network")
        return 0
    reg = _registry(ctx)
    try:
        rows = [_row(rec, reg.is_trusted(rec.signer)) for rec in reg.list(args.kind)]
    finally:
        reg.close()
    lines = [f"{r['id'][:19]}  {r['kind']:6}  {r['name']}  {_human(r['size'])}  signer {r['signer'][:12]} "
             f"({'trusted' if r['signer_trusted'] else 'untrusted'})" for r in rows]
    ctx.emit({"models": rows}, "\n".join(lines) if lines else "no models yet; add one with `mergenet submit DIR`")
    return 0


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    from node.cli.ids import resolve_model
    from registry.errors import NotFoundError

    node = resolve_node(args.node, ctx.home)
    model_id = resolve_model(ctx, args.model_id, [node])
    reg = _registry(ctx)
    try:
        try:
            rec = reg.get(model_id)
        except NotFoundError:
            rec = None
        data = rec.to_dict(trusted=reg.is_trusted(rec.signer)) if rec is not None else _show_remote(node, model_id, reg)
        carried = [a for a in map(_as_bundle, data.get("attestations", [])) if a is not None]
        tally = reg.attestation_tally(data["id"], carried)
    finally:
        reg.close()
    data["attestation_counts"] = tally.to_dict()
    m = data["manifest"]
    text = [f"{data['id']}", f"  name      {m['name']} ({m['kind']}, {m['architecture']['model_type']})",
            f"  signer    {data['signer']} ({'trusted' if data['signer_trusted'] else 'untrusted'})",
            f"  policy    {m['policy']}   license {m.get('license') or '-'}   tags {','.join(m['tags']) or '-'}",
            f"  base      {m.get('base_model') or '-'}", f"  created   {m['created']}",
            f"  files     {len(data['files'])}",
            f"  attestations {len(tally.trusted)} PASS from keys you trust, {tally.others} from other keys "
            f"(counted only when you trust them: `mergenet trust add KEY`), {len(tally.failed)} FAIL"]
    if m.get("provenance"):
        text.append(f"  provenance plan {m['provenance'].get('plan_id', '-')}")
    ctx.emit(data, "\n".join(text))
    return 0


def _as_bundle(item: Any) -> dict[str, Any] | None:
    """An attestation as the index (a dict) or a remote ad (JSON text) holds it; None if neither."""
    if isinstance(item, dict):
        return item
    try:
        bundle = json.loads(item)
    except (TypeError, ValueError, RecursionError):
        return None
    return bundle if isinstance(bundle, dict) else None


def _show_remote(node: str, model_id: str, reg) -> dict[str, Any]:
    from node.errors import PeerError
    from node.network.remote import show_remote
    from registry.errors import NotFoundError

    try:
        found = show_remote(node, model_id)
    except PeerError as exc:  # no node answers: the id is simply unknown here
        log.info("remote lookup failed: %s", exc)
        found = None
    if not found:
        raise NotFoundError(f"no model {model_id} in the local registry or on the network; see `mergenet ls`")
    found["signer_trusted"] = reg.is_trusted(found.get("signer", ""))
    return found


def cmd_trust_add(args: argparse.Namespace, ctx: Context) -> int:
    from node.cli.ids import resolve_signer
    from registry.errors import BadModelError
    from registry.home import Home
    from registry.local import looks_like_path
    from registry.trust import TrustList

    key = args.key
    path = Path(key)
    if "-----BEGIN" not in key and (path.is_file() or looks_like_path(key) or key.endswith(".pem")):
        try:
            key = path.read_text()
        except OSError as exc:
            raise BadModelError(f"cannot read the PEM public key file {key} ({exc.strerror})") from None
    elif "-----BEGIN" not in key:
        key = resolve_signer(ctx, key, [resolve_node(args.node, ctx.home)])
    key_id = TrustList(Home(ctx.home).ensure().trust_path).add(key)
    ctx.emit({"key_id": key_id, "trusted": True}, f"trusted {key_id}")
    return 0


def cmd_trust_ls(args: argparse.Namespace, ctx: Context) -> int:
    from registry.home import Home
    from registry.trust import TrustList

    keys = TrustList(Home(ctx.home).trust_path).list()
    ctx.emit({"keys": [k.to_dict() for k in keys]},
             "\n".join(f"{k.key_id}  {'pem' if k.public_key_pem else 'id only'}  added {k.added}" for k in keys)
             or "no trusted keys; add one with `mergenet trust add KEY_ID_OR_PEM_FILE`")
    return 0


def cmd_trust_rm(args: argparse.Namespace, ctx: Context) -> int:
    from registry.home import Home
    from registry.trust import TrustList

    removed = TrustList(Home(ctx.home).trust_path).remove(args.key_id)
    ctx.emit({"key_id": removed, "trusted": False}, f"removed {removed}")
    return 0
