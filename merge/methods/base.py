"""What a merge method is: a small function plus the parameters it declares.

    spec = ParamSpec("density", float, default=1.0, per_model=True)
    method = MergeMethod("ties", ties, params=(...), needs_base=True, randomized=False, reference=URL)

Every method function has the signature

    fn(tensors, base, params, global_params, generator) -> Tensor

`tensors` are the non-base inputs (float32, same shape; the caller hands over owned copies, so a
method may overwrite them in place to save memory — never `base`), `base` the base model's tensor
or None, `params` one dict of resolved per-model parameters per input, `global_params` the
method-wide parameters resolved for this tensor, `generator` a seeded torch.Generator for
randomized methods (None otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MethodFn = Callable[[list["torch.Tensor"], "torch.Tensor | None", list[dict[str, Any]], dict[str, Any],
                     "torch.Generator | None"], "torch.Tensor"]
REQUIRED = object()  # marker default: the recipe must give a value


@dataclass(frozen=True)
class ParamSpec:
    """A parameter a method reads: per model (`weight`, `density`) or method-wide (`t`, `normalize`)."""

    name: str
    kind: type
    default: Any = REQUIRED
    per_model: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class MergeMethod:
    """A registered method. `needs_base`: inputs are task vectors relative to `base_model`.

    `base_optional`: a `base_model`, when the recipe names one, is the origin of the task vectors
    (passed as `base`); without one the inputs are merged as they are. `base_as_input`: a named
    `base_model` is merged as one more ordinary input, as mergekit does for methods that ignore
    the base (it adds the base to every slice's inputs). `elementwise`: each output entry depends
    only on the same entry of the inputs (no norms, ranks or random draws over the tensor), so the
    executor may merge a large tensor in row ranges and get the same bits.
    """

    name: str
    fn: MethodFn
    params: tuple[ParamSpec, ...]
    needs_base: bool
    randomized: bool
    reference: str
    min_inputs: int = 1
    max_inputs: int | None = None
    base_optional: bool = False
    base_as_input: bool = False
    elementwise: bool = False

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)
