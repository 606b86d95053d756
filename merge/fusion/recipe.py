"""Fusion recipes: YAML → a validated, frozen `FusionRecipe`.

    target: ./pivot            # the model that is trained (its tokenizer is the output's)
    sources: [./expert-a, ./expert-b]
    data: train.jsonl          # {"instruction": ..., "response": ...} per line
    top_k: 10
    fusion: min_ce             # or avg_ce
    lm_loss_weight: 0.9        # λ in λ·LM + (1−λ)·CE-to-fused
    lr: 1.0e-4
    epochs: 1
    batch_size: 8
    max_length: 512
    seed: 0
    device: auto

Model references are kept as written: merge/ treats them as opaque names that its caller
resolves (`run_fusion(resolve=...)`; the default `local_path` reads them as paths relative to
the recipe's folder). The data file is a path, resolved against the recipe's folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from merge.errors import RecipeError

FUSION_METHODS = ("min_ce", "avg_ce")
DEFAULTS: dict[str, Any] = {
    "top_k": 10, "fusion": "min_ce", "lm_loss_weight": 0.9, "lr": 1e-4, "epochs": 1, "batch_size": 8,
    "max_length": 512, "seed": 0, "device": "auto",
}
KEYS = ("target", "sources", "data", *DEFAULTS)


@dataclass(frozen=True)
class FusionRecipe:
    """Everything a fusion run needs: model references as written, the data file's absolute path;
    `base_dir` is the recipe's folder (not part of the recipe's data)."""

    target: str
    sources: tuple[str, ...]
    data: str
    top_k: int = DEFAULTS["top_k"]
    fusion: str = DEFAULTS["fusion"]
    lm_loss_weight: float = DEFAULTS["lm_loss_weight"]
    lr: float = DEFAULTS["lr"]
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    max_length: int = DEFAULTS["max_length"]
    seed: int = DEFAULTS["seed"]
    device: str = DEFAULTS["device"]
    base_dir: str = dataclasses.field(default=".", compare=False, repr=False)

    def local_path(self, ref: str) -> Path:
        """A model reference read as a folder path, relative to the recipe's folder."""
        path = Path(ref).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def model_refs(self) -> list[str]:
        """The target first, then the sources, each once."""
        return list(dict.fromkeys([self.target, *self.sources]))

    def with_models(self, mapping: Mapping[str, str | Path]) -> FusionRecipe:
        """The same recipe with model references replaced (refs missing from `mapping` stay)."""

        def sub(ref: str) -> str:
            return str(mapping.get(ref, ref))

        return dataclasses.replace(self, target=sub(self.target), sources=tuple(sub(s) for s in self.sources))

    def to_dict(self) -> dict[str, Any]:
        """Plain data; `load_recipe(r.to_dict()) == r`."""
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        out["sources"] = list(self.sources)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_recipe(source: Path | str | Mapping[str, Any], *, base_dir: Path | None = None) -> FusionRecipe:
    """Parse a YAML file path or a mapping; RecipeError (exit 2) naming the key if invalid.

    Relative paths resolve against the recipe file's folder, else `base_dir`, else the working dir.
    """
    where = "fusion recipe"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        where = str(path)
        base_dir = base_dir or path.resolve().parent
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecipeError(f"cannot read fusion recipe {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise RecipeError(f"fusion recipe {path} is not UTF-8 text; a recipe is a YAML file") from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where} must be a YAML mapping with keys target, sources and data")
    return _parse(data, where, Path(base_dir or Path.cwd()))


def _parse(data: Mapping[str, Any], where: str, base: Path) -> FusionRecipe:
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; supported keys: {', '.join(KEYS)}")
    for key in ("target", "sources", "data"):
        if key not in data:
            raise RecipeError(f"{where}: missing required key '{key}'")
    sources = data["sources"]
    if isinstance(sources, str) or not isinstance(sources, list) or not sources:
        raise RecipeError(f"{where}: 'sources' must be a non-empty list of model folders or ids")
    values = {**DEFAULTS, **{k: v for k, v in data.items() if k in DEFAULTS}}
    recipe = FusionRecipe(
        target=_ref(data["target"], "target", where),
        sources=tuple(_ref(s, f"sources[{i}]", where) for i, s in enumerate(sources)),
        data=_data_path(data["data"], where, base),
        top_k=_int(values, "top_k", where, minimum=1),
        fusion=_choice(values, "fusion", FUSION_METHODS, where),
        lm_loss_weight=_float(values, "lm_loss_weight", where, low=0.0, high=1.0),
        lr=_float(values, "lr", where, low=0.0, high=None, open_low=True),
        epochs=_int(values, "epochs", where, minimum=1),
        batch_size=_int(values, "batch_size", where, minimum=1),
        max_length=_int(values, "max_length", where, minimum=2),
        seed=_int(values, "seed", where, minimum=0),
        device=_device(values["device"], where),
        base_dir=str(base.resolve()),
    )
    return recipe


def _ref(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise RecipeError(f"{where}: '{key}' must be a model folder or a model id")
    return str(value).strip()


def _data_path(value: Any, where: str, base: Path) -> str:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise RecipeError(f"{where}: 'data' must be a path to a JSONL file")
    path = Path(str(value).strip()).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _int(values: Mapping[str, Any], key: str, where: str, minimum: int) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(f"{where}: '{key}' must be an integer ≥ {minimum}, got {value!r}")
    return value


def _float(values: Mapping[str, Any], key: str, where: str, low: float, high: float | None,
           open_low: bool = False) -> float:
    value = values[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        ok = (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bounds = f"in [{low}, {high}]" if high is not None else f"> {low}"
        raise RecipeError(f"{where}: '{key}' must be a number {bounds}, got {value!r}")
    return float(value)


def _choice(values: Mapping[str, Any], key: str, options: tuple[str, ...], where: str) -> str:
    if values[key] not in options:
        raise RecipeError(f"{where}: '{key}' must be one of {', '.join(options)}, got {values[key]!r}")
    return values[key]


def _device(value: Any, where: str) -> str:
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise RecipeError(f"{where}: 'device' must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value
