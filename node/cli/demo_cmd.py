"""CLI command `mergenet demo`: a three-node network on loopback runs the whole story.

    mergenet demo [--workdir DIR] [--no-dht] [--eval] [--arch llama|qwen2|gpt2] [--json]

The story goes to stdout (stderr with --json, so that stdout is one JSON summary). Nodes are
stopped on success, failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.context import Context


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `demo` to the parser."""
    p = sub.add_parser("demo", parents=[common], help="run a small local network end to end and tell what happened")
    p.add_argument("--workdir", help="keep models, homes and logs here (default: a temporary folder, removed)")
    p.add_argument("--dht", action=argparse.BooleanOptionalAction, default=True,
                   help="nodes discover each other through a hivemind DHT (default on)")
    p.add_argument("--eval", action="store_true", help="also compare held-out loss of base, experts and merge")
    p.add_argument("--arch", default="llama", choices=("llama", "qwen2", "gpt2"), help="tiny model architecture")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    import signal

    from node.demo.story import DemoOptions, run_demo

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # stop the nodes on SIGTERM as on Ctrl-C
    say = ctx.note if ctx.json else (lambda line: ctx.emit(None, line))
    opts = DemoOptions(workdir=Path(args.workdir) if args.workdir else None, arch=args.arch, dht=args.dht,
                       evaluate=args.eval)
    summary = run_demo(opts, say)
    if ctx.json:
        ctx.emit(summary)
    return 0 if summary["stray_processes"] == 0 else 1
