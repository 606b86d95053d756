"""Model breadcrumbs: drop the largest `gamma` share of task-vector magnitudes (outliers) and
the smallest, keeping `density`; combine linearly (`breadcrumbs`) or with TIES sign election
(`breadcrumbs_ties`).

Reference: Davari & Belilovsky, https://arxiv.org/abs/2312.06795
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec
from merge.methods.gta import combine, gta_params, task_vectors, weights_of
from merge.methods.sparsify import magnitude_outliers

PARAMS = gta_params(normalize=False, rescale=False,
                    extra=(ParamSpec("gamma", float, 0.01, per_model=True, doc="share of largest entries dropped"),))
REFERENCE = "https://arxiv.org/abs/2312.06795"


def _trimmed(tensors: list[torch.Tensor], base: torch.Tensor, params: list[dict[str, Any]],
             global_params: dict[str, Any]) -> list[torch.Tensor]:
    return [magnitude_outliers(d, p["density"], p["gamma"], rescale=global_params["rescale"])
            for d, p in zip(task_vectors(tensors, base), params, strict=True)]


def breadcrumbs(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    return combine(base, _trimmed(tensors, base, params, global_params), weights_of(params), consensus=False,
                   normalize=global_params["normalize"], lam=global_params["lambda"])


def breadcrumbs_ties(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                     global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    return combine(base, _trimmed(tensors, base, params, global_params), weights_of(params), consensus=True,
                   normalize=global_params["normalize"], lam=global_params["lambda"])
