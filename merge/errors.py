"""The merge engine's exception hierarchy.

`MergeError` is an operational failure (exit 1); `RecipeError` a recipe that cannot be run as
written and `IncompatibleModelsError` inputs that cannot be merged together (both exit 2).
"""


class MergeError(Exception):
    """Base of every merge-engine failure; on its own an operational error (exit 1)."""


class MergeInputError(MergeError):
    """Input the user must fix: recipe, model folder, data file (exit 2)."""


class RecipeError(MergeInputError):
    """A recipe that is malformed or asks for something unsupported (exit 2)."""


class IncompatibleModelsError(MergeInputError):
    """Models whose tensors cannot be merged together (exit 2)."""
