"""The node's exception hierarchy: `NodeError` (exit 1: network, peer, disk) and
`NodeInputError` (exit 2: a flag, address or file the user must fix)."""


class NodeError(Exception):
    """Base of every node failure; on its own an operational error (exit 1)."""


class NodeInputError(NodeError):
    """A command-line value or file the user must fix (exit 2)."""


class PeerError(NodeError):
    """A peer that could not be reached or misbehaved (exit 1)."""
