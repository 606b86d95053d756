"""Task arithmetic: base + λ·Σ wᵢ·(xᵢ − base) (no sparsification, no sign election).

Reference: Ilharco et al., https://arxiv.org/abs/2212.04089
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.gta import combine, gta_params, task_vectors, weights_of

PARAMS = gta_params(normalize=False, rescale=False)
REFERENCE = "https://arxiv.org/abs/2212.04089"


def task_arithmetic(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                    global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = task_vectors(tensors, base)
    return combine(base, deltas, weights_of(params), consensus=False,
                   normalize=global_params["normalize"], lam=global_params["lambda"])
