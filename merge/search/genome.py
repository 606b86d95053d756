"""The search space: per layer group × per model × {weight, density} genes, and the mapping
between a normalized CMA-ES vector in [0, 1]^d and a recipe with per-layer parameter lists.

    space = SearchSpace.from_recipe(recipe, n_layers=8, group_size=2)
    x0 = space.start()                       # the recipe's own (uniform) values, normalized
    candidate = space.to_recipe(x0)          # a Recipe with one list entry per layer

A per-layer list of n values is exactly layer-wise under mergekit's gradient rule (layer i sits
at t·(n−1) = i), so the written recipe reproduces the candidate through `mergenet merge`.
Tensors outside the layers (embeddings, final norm, head) take t = 0: the first group's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from merge.errors import RecipeError
from merge.params import lookup
from merge.recipe import ModelEntry, Recipe, load_recipe

# Default gene bounds; a recipe's starting value outside them widens them to include it.
WEIGHT_BOUNDS = (0.0, 1.0)
DENSITY_BOUNDS = (0.1, 1.0)
SEARCHED = ("weight", "density")


@dataclass(frozen=True)
class Gene:
    model: str
    param: str
    group: int
    low: float
    high: float
    start: float


@dataclass(frozen=True)
class SearchSpace:
    """Genes in a fixed order: model-major, then parameter, then layer group."""

    recipe: Recipe
    n_layers: int
    group_size: int
    genes: tuple[Gene, ...]

    @property
    def n_groups(self) -> int:
        return math.ceil(self.n_layers / self.group_size)

    @property
    def dim(self) -> int:
        return len(self.genes)

    @classmethod
    def from_recipe(cls, recipe: Recipe, n_layers: int, group_size: int = 1,
                    bounds: dict[str, tuple[float, float]] | None = None) -> SearchSpace:
        from merge.methods import METHODS

        if recipe.slices or not recipe.models:
            raise RecipeError("search needs a recipe with a 'models' list (slices are not searchable)")
        if n_layers < 1 or group_size < 1:
            raise RecipeError("search needs at least one layer and a positive --group-size")
        method = METHODS[recipe.merge_method]
        declared = {p.name: p for p in method.params if p.per_model}
        params = [p for p in SEARCHED if p in declared]
        if "weight" not in params:
            raise RecipeError(f"merge_method {recipe.merge_method} has no per-model weight to search; "
                              f"use linear, task_arithmetic, ties, dare_ties or similar")
        bounds = {"weight": WEIGHT_BOUNDS, "density": DENSITY_BOUNDS, **(bounds or {})}
        # With a base-using method the base is the origin of the task vectors, not an input.
        uses_base = method.needs_base or method.base_optional
        models = [m for m in recipe.models if not (uses_base and m.model == recipe.base_model)]
        n_groups = math.ceil(n_layers / group_size)
        genes = []
        for entry in models:
            for param in params:
                for g in range(n_groups):
                    start = _start_value(recipe, entry, param, g * group_size, n_layers, declared[param].default)
                    low, high = bounds[param]
                    genes.append(Gene(entry.model, param, g, min(low, start), max(high, start), start))
        return cls(recipe=recipe, n_layers=n_layers, group_size=group_size, genes=tuple(genes))

    def start(self) -> list[float]:
        return [_norm(g.start, g) for g in self.genes]

    def values(self, x: list[float]) -> list[float]:
        """Normalized vector → actual parameter values (clipped to the bounds)."""
        if len(x) != self.dim:
            raise RecipeError(f"genome has {len(x)} values, the search space {self.dim}")
        return [g.low + min(1.0, max(0.0, xi)) * (g.high - g.low) for g, xi in zip(self.genes, x, strict=True)]

    def layer_lists(self, x: list[float]) -> dict[str, dict[str, list[float]]]:
        """model → param → one value per layer (each group's value repeated over its layers)."""
        out: dict[str, dict[str, list[float]]] = {}
        for gene, value in zip(self.genes, self.values(x), strict=True):
            per_layer = out.setdefault(gene.model, {}).setdefault(gene.param, [0.0] * self.n_layers)
            for layer in range(gene.group * self.group_size, min(self.n_layers, (gene.group + 1) * self.group_size)):
                per_layer[layer] = round(value, 6)  # readable YAML; the merge uses these exact numbers
        return out

    def start_params(self) -> dict[str, dict[str, Any]]:
        """The start as the log shows it: per-layer lists, except that a per-filter value
        (`[{filter: mlp, value: 0.7}, {value: 0.4}]`), which no gene represents, is kept as written."""
        out = self.layer_lists(self.start())
        for entry in self.recipe.models:
            for param, value in entry.parameters.items():
                if entry.model in out and param in out[entry.model] and _has_filters(value):
                    out[entry.model][param] = value
        return out

    def to_recipe(self, x: list[float]) -> Recipe:
        """The recipe with the searched parameters replaced by per-layer lists."""
        lists = self.layer_lists(x)
        models = []
        for m in self.recipe.models:
            params = dict(m.parameters)
            params.update(lists.get(m.model, {}))
            models.append(ModelEntry(m.model, params))
        data = self.recipe.to_dict()
        data["models"] = [{"model": m.model, **({"parameters": m.parameters} if m.parameters else {})}
                          for m in models]
        return load_recipe(data)


def _has_filters(value: Any) -> bool:
    return isinstance(value, list | tuple) and any(isinstance(v, dict) and "filter" in v for v in value)


def _norm(value: float, gene: Gene) -> float:
    return 0.0 if gene.high == gene.low else (value - gene.low) / (gene.high - gene.low)


def _start_value(recipe: Recipe, entry: ModelEntry, param: str, layer: int, n_layers: int, default) -> float:
    """The recipe's own value of `param` for `entry` at a layer (model scope, then global), else
    the method's declared default; a parameter the recipe must give and doesn't starts at 1."""
    t = 1.0 if n_layers == 1 else layer / (n_layers - 1)
    value = lookup(param, [entry.parameters, recipe.parameters], tensor_name=f"layers.{layer}.", t=t)
    if value is None:
        value = default if isinstance(default, int | float) and not isinstance(default, bool) else 1.0
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"models[{entry.model}].parameters.{param} must be a number to be searched, "
                          f"got {value!r}") from exc
