"""node — the running contributor node and the `mergenet` command line.

Pipeline: config → server → discovery → plans → jobs → pull; `node.cli` is the CLI.
"""

__version__ = "0.1.0"
