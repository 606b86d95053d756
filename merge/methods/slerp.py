"""Spherical linear interpolation between the base tensor (t = 0) and one other (t = 1).

The angle is measured between the flattened, normalized tensors; when they are nearly colinear
(|cos| > 0.9995) it falls back to linear interpolation, as every common implementation does.
Reference: Shoemake 1985; https://en.wikipedia.org/wiki/Slerp
"""

from __future__ import annotations

import math
from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec

PARAMS = (ParamSpec("t", float, doc="interpolation factor: 0 = base, 1 = the other model"),)
REFERENCE = "https://en.wikipedia.org/wiki/Slerp"
DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


def slerp_coefficients(t: float, v0: torch.Tensor, v1: torch.Tensor) -> tuple[float, float]:
    """(c0, c1) with slerp(t, v0, v1) = c0·v0 + c1·v1."""
    n0 = float(torch.linalg.vector_norm(v0))
    n1 = float(torch.linalg.vector_norm(v1))
    n0 = n0 if n0 > NORM_EPS else 1.0
    n1 = n1 if n1 > NORM_EPS else 1.0
    dot = float(torch.dot(v0.reshape(-1), v1.reshape(-1)))
    dot = max(-1.0, min(1.0, dot / (n0 * n1)))
    if abs(dot) > DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    return math.sin((1 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta


def slerp(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
          global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    (other,) = tensors
    c0, c1 = slerp_coefficients(float(global_params["t"]), base, other)
    return other.mul_(c1).add_(base, alpha=c0)
