"""CLI commands `mergenet demo` (a three-node network on loopback runs the whole story) and
`mergenet example-models` (the demo's tiny models, kept, to try the other commands with).

    mergenet demo [--workdir DIR] [--no-dht] [--eval] [--arch llama|qwen2|gpt2] [--json]
    mergenet example-models DIR [--arch llama|qwen2|gpt2] [--experts 2]

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

    p = sub.add_parser("example-models", parents=[common],
                       help="write a tiny base model and experts fine-tuned from it (to try submit, merge, plans)")
    p.add_argument("out_dir", metavar="DIR", help="an empty or new folder")
    p.add_argument("--arch", default="llama", choices=("llama", "qwen2", "gpt2"), help="architecture (default llama)")
    p.add_argument("--experts", type=int, default=2, help="how many experts (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and tokenizer (default 0)")
    p.set_defaults(func=cmd_example_models)


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


def cmd_example_models(args: argparse.Namespace, ctx: Context) -> int:
    from node.demo.models import make_family
    from node.errors import NodeInputError

    out = Path(args.out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NodeInputError(f"{out} already exists and is not empty; choose a new folder")
    if args.experts < 1:
        raise NodeInputError(f"--experts {args.experts}: make at least one expert")
    base, experts = make_family(out, arch=args.arch, n_experts=args.experts, seed=args.seed)
    data = {"base": str(base), "experts": [str(e) for e in experts], "arch": args.arch}
    lines = [f"base    {base}", *[f"expert  {e}" for e in experts],
             f"next: mergenet submit {base} --kind base && mergenet submit {experts[0]} --base {base}"]
    ctx.emit(data, "\n".join(lines))
    return 0
