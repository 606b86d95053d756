"""Model stock: interpolate between the base and the average of the fine-tuned models by
t = N·cosθ / (1 + (N − 1)·cosθ), θ being the mean pairwise angle between task vectors
(per tensor, or per row with `filter_wise`). Needs a base and at least two other models.

Reference: Jang et al., https://arxiv.org/abs/2403.19522
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (ParamSpec("filter_wise", bool, False, doc="one angle per row instead of per tensor"),)
REFERENCE = "https://arxiv.org/abs/2403.19522"


def model_stock(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    shape = base.shape
    if global_params["filter_wise"]:
        w0 = base if base.dim() > 1 else base.unsqueeze(0)
        w0 = w0.reshape(w0.shape[0], -1)  # (rows, cols)
    else:
        w0 = base.reshape(-1)
    ws = [t.reshape(w0.shape) for t in tensors]
    offsets = [w - w0 for w in ws]
    cos = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1:]:
            norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
            cos.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    del offsets
    cos_theta = torch.stack(cos).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    denominator = 1 + (n - 1) * cos_theta
    # At the singularity no finite interpolation exists: keep the base for that row/tensor.
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos_theta),
                    n * cos_theta / torch.where(singular, torch.ones_like(denominator), denominator))
    average = ws[0]
    for w in ws[1:]:
        average.add_(w)
    average.div_(n)
    return (t * average + (1 - t) * w0).reshape(shape)
