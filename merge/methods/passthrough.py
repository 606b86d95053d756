"""Passthrough: copy the single input's tensor (optionally scaled): the building block of
"frankenmerges" that stack layer ranges of different models with `slices`.

Reference: mergekit's passthrough method, https://github.com/arcee-ai/mergekit
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (ParamSpec("scale", float, None, per_model=True, doc="optional factor applied to the tensor"),)
REFERENCE = "https://github.com/arcee-ai/mergekit"


def passthrough(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    (tensor,) = tensors
    scale = params[0]["scale"]
    return tensor if scale is None else tensor.mul_(scale)
