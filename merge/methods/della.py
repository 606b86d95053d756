"""DELLA: drop task-vector entries with a probability that falls with their magnitude rank
(MAGPRUNE), rescale the survivors, then combine with TIES sign election (`della`) or linearly
(`della_linear`).

Reference: Deep et al., https://arxiv.org/abs/2406.11617. Parameters as mergekit 0.1.5: per
model `weight`, `density` (mean keep rate) and `epsilon` (half-width of the keep-probability
range, default 0.15); `normalize` (default true for `della`, false for `della_linear`),
`rescale` (default true: restore the L1 norm, as mergekit; `paper_rescale: true` divides each
survivor by its keep probability, as the paper), `lambda`. Drop masks come from the per-tensor
generator, one draw per model in recipe order.
"""

from __future__ import annotations

from typing import Any

from merge.lazy import torch
from merge.methods.base import ParamSpec
from merge.methods.dare import PAPER_RESCALE
from merge.methods.gta import combine, gta_params, task_vectors, weights_of
from merge.methods.sparsify import magprune

EPSILON = ParamSpec("epsilon", float, 0.15, per_model=True,
                    doc="keep probabilities span density ± epsilon, by magnitude rank within a row")
PARAMS = gta_params(normalize=True, rescale=True, extra=(EPSILON, PAPER_RESCALE))
LINEAR_PARAMS = gta_params(normalize=False, rescale=True, extra=(EPSILON, PAPER_RESCALE))
REFERENCE = "https://arxiv.org/abs/2406.11617"


def _pruned(tensors: list[torch.Tensor], base: torch.Tensor, params: list[dict[str, Any]],
            global_params: dict[str, Any], generator: torch.Generator | None) -> list[torch.Tensor]:
    return [magprune(d, p["density"], p["epsilon"], generator, rescale=global_params["rescale"],
                     paper=global_params["paper_rescale"])
            for d, p in zip(task_vectors(tensors, base), params, strict=True)]


def della(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
          global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = _pruned(tensors, base, params, global_params, generator)
    return combine(base, deltas, weights_of(params), consensus=True,
                   normalize=global_params["normalize"], lam=global_params["lambda"])


def della_linear(tensors: list[torch.Tensor], base: torch.Tensor | None, params: list[dict[str, Any]],
                 global_params: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    deltas = _pruned(tensors, base, params, global_params, generator)
    return combine(base, deltas, weights_of(params), consensus=False,
                   normalize=global_params["normalize"], lam=global_params["lambda"])
