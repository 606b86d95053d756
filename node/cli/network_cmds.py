"""CLI command `pull`: a model as a verified folder, from the local store or the network.

    mergenet pull ID [-o DIR] [--from HOST:PORT,...] [--trusted-only]

Heavy imports (grpc, hivemind, torch) happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.context import Context


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `pull` to the parser."""
    pull = sub.add_parser("pull", parents=[common], help="materialize a model as a folder, from the local store "
                                                        "or the network, verified before it is visible")
    pull.add_argument("model_id", metavar="ID", help="model id, or an unambiguous prefix of one (as `ls --remote` "
                                                     "prints it)")
    pull.add_argument("-o", "--output", help="destination folder (default: ./<model name>)")
    pull.add_argument("--from", dest="sources", help="pull from these nodes (HOST:PORT,...) instead of asking "
                                                      "the local node for holders")
    pull.add_argument("--node", help="local node to ask for holders (default: this home's node, $MERGENET_NODE)")
    pull.add_argument("--trusted-only", action="store_true", help="refuse models whose signer is not trusted")
    pull.add_argument("--require-attestations", type=int, default=0, metavar="N",
                      help="refuse the model unless N keys you trust (`mergenet trust`) attested it PASS "
                           "(attestations by other keys are shown, never counted)")
    pull.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace, ctx: Context) -> int:
    from node.cli.ids import resolve_model
    from node.transfer.pull import pull

    sources = [s.strip() for s in (args.sources or "").split(",") if s.strip()]
    out = Path(args.output).expanduser().resolve() if args.output else None
    node_addr = None if sources else ctx.node_addr(args.node)
    model_id = resolve_model(ctx, args.model_id, sources or [node_addr])
    with ctx.progress(f"pull {model_id[:19]}", unit="B", unit_scale=True) as progress:
        result = pull(model_id, ctx.home, out, sources=sources, node_addr=node_addr,
                      trusted_only=args.trusted_only, progress=progress,
                      require_attestations=args.require_attestations)
    if result.sources != ("local",) and node_addr:
        ctx.notify_node(node_addr, result.model_id)
    data = {"id": result.model_id, "path": str(result.path), "sources": list(result.sources),
            "bytes_fetched": result.bytes_fetched}
    origin = "local store" if result.sources == ("local",) else ", ".join(result.sources)
    ctx.emit(data, f"{result.model_id}\n  -> {result.path}  (from {origin}, {result.bytes_fetched} bytes fetched)")
    return 0
