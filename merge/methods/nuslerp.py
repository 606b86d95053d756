"""NuSLERP: spherical interpolation between two models with mergekit's newer conventions —
the factor comes from per-model weights (t = w₂ / (w₁ + w₂), 0.5 when they sum to ~0), a base
model (optional) makes it interpolate task vectors, and it can work per row or column.

Reference: mergekit 0.1.5 `nuslerp`, https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/nuslerp.py.
`nuslerp_flatten` (default true) treats the tensor as one vector; with false, each slice along
the last dimension is interpolated on its own, or along the first with `nuslerp_row_wise`
(mergekit's naming: "row-wise" moves dim 0 last, so each column vector is one interpolant).
Only exactly colinear pairs (1 − cos² ≤ 1e-16) fall back to linear interpolation.
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (
    ParamSpec("weight", float, per_model=True, doc="this model's share; t = w₂ / (w₁ + w₂)"),
    ParamSpec("nuslerp_row_wise", bool, False, doc="interpolate vectors along dim 0 (when not flattened)"),
    ParamSpec("nuslerp_flatten", bool, True, doc="interpolate the whole tensor as one vector"),
)
REFERENCE = "https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/nuslerp.py"
COLINEAR_EPS = 1e-8
NORM_MIN = 1e-7


def nuslerp(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
            global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    w0, w1 = (float(p["weight"]) for p in params)
    total = w0 + w1
    t = 0.5 if abs(total) < 1e-6 else w1 / total
    v0, v1 = tensors
    if base is not None:
        v0, v1 = v0.sub_(base), v1.sub_(base)
    shape = v0.shape
    if global_params["nuslerp_flatten"]:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif global_params["nuslerp_row_wise"] and v0.dim() > 1:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    n0 = torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp_(min=NORM_MIN)
    n1 = torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp_(min=NORM_MIN)
    cos = ((v0 / n0) * (v1 / n1)).sum(dim=-1, keepdim=True).clamp_(-1, 1)  # (..., 1)
    colinear = (1 - cos.square()) <= COLINEAR_EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    c0 = torch.where(colinear, 1 - t, torch.sin((1 - t) * theta) / torch.sin(theta))
    c1 = torch.where(colinear, t, torch.sin(t * theta) / torch.sin(theta))
    out = v0.mul_(c0).add_(v1.mul_(c1))
    if not global_params["nuslerp_flatten"] and global_params["nuslerp_row_wise"] and out.dim() > 1:
        out = out.transpose(0, -1)
    out = out.reshape(shape)
    return out.add_(base) if base is not None else out
