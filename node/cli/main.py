"""`mergenet` entry point: builds the parser from the command modules, runs the handler and
turns exceptions into one stderr line and the exit code of CLI.md (0 ok, 1 operational,
2 usage/bad input, 3 verification failure).

Command modules are imported here but must import heavy libraries (torch, transformers,
hivemind, grpc) inside their handlers, so that `mergenet verify` starts in a blink.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from node.cli.context import Context, resolve_home

# Each module defines `register(subparsers, common)`; the order is the order of `--help`.
COMMAND_MODULES = (
    "node.cli.registry_cmds",
    "node.cli.store_cmds",
    "node.cli.merge_cmds",
    "node.cli.search_cmds",
    "node.cli.fuse_cmds",
    "node.cli.node_cmds",
    "node.cli.network_cmds",
    "node.cli.plan_cmds",
    "node.cli.demo_cmd",
)

EXIT_OK, EXIT_OPERATIONAL, EXIT_BAD_INPUT, EXIT_VERIFICATION = 0, 1, 2, 3

log = logging.getLogger("mergenet")


class UsageError(Exception):
    """A command line argparse refuses (exit 2), raised instead of argparse's own exit so that
    `--json` can report it on stdout like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{message} (see `{self.prog} -h`)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="data directory (default: $MERGENET_HOME or ~/.mergenet)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser = _Parser(
        prog="mergenet",
        description="Decentralized model merging: submit signed experts, merge, verify, pull.",
    )
    parser.add_argument("--version", action="version", version=f"mergenet {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def _version() -> str:
    from registry.version import MERGENET_VERSION

    return MERGENET_VERSION


def exit_code_for(exc: BaseException) -> int:
    from merge.errors import MergeError, MergeInputError
    from node.errors import NodeError, NodeInputError
    from registry.errors import BadModelError, RegistryError, VerificationError

    if isinstance(exc, VerificationError):
        return EXIT_VERIFICATION
    if isinstance(exc, BadModelError | MergeInputError | NodeInputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, RegistryError | MergeError | NodeError | OSError):
        return EXIT_OPERATIONAL
    return EXIT_OPERATIONAL


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def report_error(message: str, code: int, json_mode: bool) -> int:
    """One line on stderr; with `--json` also `{"error", "exit"}` on stdout, which stays one document."""
    sys.stderr.write(f"mergenet: error: {message}\n")
    if json_mode:
        sys.stdout.write(json.dumps({"error": message, "exit": code}) + "\n")
        sys.stdout.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return report_error(str(exc), EXIT_BAD_INPUT, json_mode="--json" in argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx = Context(home=resolve_home(args.home), json=args.json, verbose=args.verbose)
    try:
        code = args.func(args, ctx)
    except KeyboardInterrupt:
        sys.stderr.write("mergenet: interrupted\n")
        return 130
    except Exception as exc:  # the one place that turns any failure into an exit code
        code = exit_code_for(exc)
        known = exc.__class__.__module__.split(".")[0] in {"merge", "node", "registry"}
        if args.verbose or not (known or isinstance(exc, OSError)):
            log.debug("command failed", exc_info=exc)
        if not known and not isinstance(exc, OSError) and args.verbose:
            import traceback

            traceback.print_exc()
        return report_error(one_line(exc), code, json_mode=args.json)
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
