"""DARE: drop each task-vector entry with probability 1 − density and rescale the survivors,
then combine linearly (`dare_linear`) or with TIES sign election (`dare_ties`).

Reference: Yu et al., https://arxiv.org/abs/2311.03099. `rescale` (default true) restores each
dropped task vector to the L1 norm it had, as mergekit 0.1.5 does, so a mergekit recipe means
here what it means there; `paper_rescale: true` divides the survivors by density instead, as in
the paper (equal in expectation). The drop mask comes from the per-tensor generator, so results
are reproducible and a tensor recomputed alone gets the same bytes.
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec
from merge.methods.gta import combine, gta_params, task_vectors, weights_of
from merge.methods.sparsify import bernoulli

PAPER_RESCALE = ParamSpec("paper_rescale", bool, False,
                          doc="with rescale: divide survivors by their keep probability (the papers) "
                              "instead of restoring the L1 norm (mergekit); mergenet only")
PARAMS = gta_params(normalize=False, rescale=True, extra=(PAPER_RESCALE,))
REFERENCE = "https://arxiv.org/abs/2311.03099"


def _dropped(tensors: list[torch.Tensor], base: torch.Tensor, params: list[dict[str, Any]],
             global_params: dict[str, Any], generator: torch.Generator | None) -> list[torch.Tensor]:
    return [bernoulli(d, p["density"], generator, rescale=global_params["rescale"],
                      paper=global_params["paper_rescale"])
            for d, p in zip(task_vectors(tensors, base), params, strict=True)]


def dare_ties(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
              global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = _dropped(tensors, base, params, global_params, generator)
    return combine(base, deltas, weights_of(params), consensus=True,
                   normalize=global_params["normalize"], lam=global_params["lambda"])


def dare_linear(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = _dropped(tensors, base, params, global_params, generator)
    return combine(base, deltas, weights_of(params), consensus=False,
                   normalize=global_params["normalize"], lam=global_params["lambda"])
