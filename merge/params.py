"""Per-tensor parameter resolution, exactly as mergekit 0.1.5 evaluates recipe settings.

    value = setting_value(setting, tensor_name="model.layers.3.mlp.up_proj.weight", t=0.5)
    value = lookup("density", scopes, tensor_name=..., t=...)

A setting is a scalar, a list of numbers (a gradient: piecewise-linear over t ∈ [0, 1],
evaluated at t·(k−1); for a numeric parameter, numeric strings such as "1e-3" count as
numbers), a list of booleans/strings (picks entry int(t·(k−1))), or one `{filter, value}`
entry or a list of them (the first whose filter is absent, `*` or a substring of the tensor
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


def _is_number(e: Any) -> bool:
    return isinstance(e, int | float) and not isinstance(e, bool)


def _as_number(e: Any) -> Any:
    """A numeric string as its float (mergekit validates gradient entries before interpolating)."""
    if isinstance(e, str):
        try:
            return float(e)
        except ValueError:
            return e
    return e


def setting_value(setting: Any, tensor_name: str, t: float = 0.0, kind: type | None = None) -> Any:
    """The value `setting` takes for `tensor_name` at layer position `t`; None if no filter matches.
    `kind` is the parameter's type when known: for int and float, numeric strings interpolate."""
    if isinstance(setting, bool | int | float | str):
        return setting
    if isinstance(setting, Mapping):
        setting = [setting]
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, bool | int | float | str) for e in setting):
            values = [_as_number(e) for e in setting] if kind in (int, float) else setting
            if all(_is_number(e) for e in values):
                return gradient(values, t)
            return values[int(t * (len(values) - 1))]
        for cond in setting:
            filt = cond.get("filter")
            if filt is None or filt == "*" or (tensor_name and filt in tensor_name):
                return setting_value(cond["value"], tensor_name, t, kind)
        return None
    raise RecipeError(f"unexpected parameter setting {setting!r} for tensor {tensor_name}")


def lookup(name: str, scopes: Iterable[Mapping[str, Any] | None], tensor_name: str, t: float,
           kind: type | None = None) -> Any:
    """First non-None value of parameter `name` across `scopes` (most specific first), else None."""
    for scope in scopes:
        if scope and name in scope:
            value = setting_value(scope[name], tensor_name, t, kind)
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
