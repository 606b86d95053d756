"""node.cli — the `mergenet` command line: `main.py` parses and dispatches; each `*_cmds.py`
module registers one group of subcommands; `context.py` holds output, progress and home."""
