"""CLI commands of the content store: `store check`.

    mergenet store check            # exit 3 when a blob's bytes do not match its name
    mergenet store check --repair   # remove corrupt blobs and stale partials; a pull re-fetches them

The work is `registry.store_check.check_store`; this module only parses flags and prints.
"""

from __future__ import annotations

import argparse

from node.cli.context import Context

EXIT_CORRUPT = 3  # CLI.md: verification failure (a tampered blob)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `store check` to the parser."""
    store = sub.add_parser("store", parents=[common], help="inspect and repair the content store")
    store_sub = store.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    p = store_sub.add_parser("check", parents=[common], help="re-hash every blob; report corrupt blobs and the "
                                                           "models they break (exit 3 when any)")
    p.add_argument("--repair", action="store_true", help="remove corrupt blobs and partial downloads no pull is "
                                                         "writing, so a later pull fetches them again")
    p.set_defaults(func=cmd_store_check)


def cmd_store_check(args: argparse.Namespace, ctx: Context) -> int:
    from registry.local import LocalRegistry
    from registry.store_check import check_store

    reg = LocalRegistry(ctx.home)
    try:
        with ctx.progress("checking store", unit="B", unit_scale=True) as progress:
            report = check_store(reg, repair=args.repair, progress=progress)
    finally:
        reg.close()
    ctx.emit(report.to_dict(), _text(report))
    if not report.clean:
        ctx.note(f"mergenet: error: {len(report.corrupt)} corrupt blob(s) in the content store; "
                 "run `mergenet store check --repair` to remove them, then pull the models again")
        return EXIT_CORRUPT
    return 0


def _text(report) -> str:
    lines = [f"{report.blobs} blobs checked ({report.bytes} bytes): "
             + (f"{len(report.corrupt)} corrupt" if report.corrupt else "all match their names")]
    for c in report.corrupt:
        users = ", ".join(f"{m.id} ({m.name})" for m in c.models) or "no registered model"
        lines.append(f"  {'removed' if c.removed else 'CORRUPT'} {c.digest}: {c.problem}; used by {users}")
    if report.partials:
        kept = len(report.partials) - len(report.removed_partials)
        lines.append(f"{len(report.partials)} partial download(s): {len(report.removed_partials)} removed, "
                     f"{kept} kept")
    for m in report.incomplete:
        lines.append(f"incomplete model {m.id} ({m.name}): {len(m.missing)} file(s) missing; "
                     f"`mergenet pull {m.id}` fetches them again")
    return "\n".join(lines)
