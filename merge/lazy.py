"""torch, imported on first use rather than when merge.methods is.

    from merge.lazy import torch     # in a method module, instead of `import torch`
    torch.zeros(3)                    # the first attribute imports torch; later ones are plain lookups

Parsing and checking a recipe needs every method's declared parameters, which live beside each
method's code. A node checks the recipe of every plan it hears of and executes only a few: with
an eager `import torch` each check cost seconds of CPU inside the gRPC handler (the sender's call
timed out) and kept ~200 MB resident on nodes that never merged. Annotations stay `torch.Tensor`
(they are strings under `from __future__ import annotations`, never evaluated).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """Stands for the module `name`; attribute reads import it (thread-safe: the import lock) and
    are cached on this object, so the cost is one import and one lookup per name."""

    def __getattr__(self, attr: str) -> Any:  # only called when the attribute is not cached yet
        value = getattr(importlib.import_module(self.__name__), attr)
        setattr(self, attr, value)
        return value


torch = LazyModule("torch")
