"""The merge engine's exception hierarchy.

`MergeError` is an operational failure (exit 1); `RecipeError` a recipe that cannot be run as
written and `IncompatibleModelsError` inputs that cannot be merged together (both exit 2).
"""

from collections.abc import Mapping
from typing import Any


class MergeError(Exception):
    """Base of every merge-engine failure; on its own an operational error (exit 1)."""


class MergeInputError(MergeError):
    """Input the user must fix: recipe, model folder, data file (exit 2)."""


class RecipeError(MergeInputError):
    """A recipe that is malformed or asks for something unsupported (exit 2)."""


class IncompatibleModelsError(MergeInputError):
    """Models whose tensors cannot be merged together (exit 2)."""


def check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """RecipeError naming the first key of `data` not in `allowed`, listing `allowed`."""
    for key in data:
        if key not in allowed:
            raise RecipeError(f"{where}: unknown key {key!r}; supported: {', '.join(allowed)}")
