"""Per-tensor parameter resolution, exactly as mergekit 0.1.5 evaluates recipe settings.

    value = setting_value(setting, tensor_name="model.layers.3.mlp.up_proj.weight", t=0.5)
    value = lookup("density", scopes, tensor_name=..., t=...)

A setting is a scalar, a list of numbers (a gradient: piecewise-linear over t ∈ [0, 1],
evaluated at t·(k−1)), a list of booleans/strings (picks entry int(t·(k−1))), or a list of
`{filter, value}` entries (the first whose filter is absent, `*` or a substring of the tensor
name wins). `t` is the layer's position in its slice (i/(n−1), or 1 for a one-layer slice);
tensors outside the repeated layers get t = 0. Scopes are searched from the most specific (the
model's own parameters) to the global `parameters`; a scope whose filters match nothing falls
through to the next one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from merge.errors import RecipeError


def gradient(values: list[float], t: float) -> float:
    """Piecewise-linear interpolation of `values` at t ∈ [0, 1] (mergekit's formula)."""
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def setting_value(setting: Any, tensor_name: str, t: float = 0.0) -> Any:
    """The value `setting` takes for `tensor_name` at layer position `t`; None if no filter matches."""
    if isinstance(setting, bool | int | float | str):
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, bool | int | float | str) for e in setting):
            if all(isinstance(e, int | float) and not isinstance(e, bool) for e in setting):
                return gradient(setting, t)
            return setting[int(t * (len(setting) - 1))]
        for cond in setting:
            filt = cond.get("filter")
            if filt is None or filt == "*" or (tensor_name and filt in tensor_name):
                return setting_value(cond["value"], tensor_name, t)
        return None
    raise RecipeError(f"unexpected parameter setting {setting!r} for tensor {tensor_name}")


def lookup(name: str, scopes: Iterable[Mapping[str, Any] | None], tensor_name: str, t: float) -> Any:
    """First non-None value of parameter `name` across `scopes` (most specific first), else None."""
    for scope in scopes:
        if scope and name in scope:
            value = setting_value(scope[name], tensor_name, t)
            if value is not None:
                return value
    return None


def coerce(value: Any, kind: type, where: str) -> Any:
    """Validate a resolved value against the parameter's declared type (bool, int or float)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is not None:
            if not math.isfinite(number):  # a NaN/inf weight would silently poison every tensor
                raise RecipeError(f"{where} must be a finite number, got {value!r}")
            return number
    raise RecipeError(f"{where} must be a {kind.__name__}, got {value!r}")
