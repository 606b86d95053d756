"""Plan failures: `PlanInputError`/`PolicyError` are the user's to fix (exit 2), `PlanError` is
operational (exit 1), `ForgedStatementError` marks a statement whose signature or signer is wrong
(peers' forged statements are dropped and logged; the CLI maps it to exit 3)."""

from __future__ import annotations

from node.errors import NodeError, NodeInputError
from registry.errors import VerificationError


class PlanError(NodeError):
    """A plan could not be carried out (peer, disk, timeout): exit 1."""


class PlanInputError(NodeInputError):
    """A malformed plan, recipe or statement field: exit 2."""


class PolicyError(NodeInputError):
    """A plan that the inputs' merge policy forbids (`closed`): exit 2."""


class UnknownPlanError(NodeInputError):
    """A plan id that this node has never seen: exit 2."""


class ForgedStatementError(VerificationError, NodeError):
    """A signed statement that does not verify or is signed by the wrong key: exit 3."""
