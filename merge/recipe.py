"""Merge recipes: mergekit-style YAML parsed into frozen dataclasses, validated at the edge.

    recipe = load_recipe("ties.yaml")          # or a YAML string, or a dict
    recipe = recipe.with_models({"sha256:ab…": "/tmp/expert1"})
    text = recipe.to_yaml()

First step of the pipeline recipe → plan → method → executor → writer. Every error names the
field at fault and lists what is supported, so a recipe can be fixed from the message alone.
Parameter values are kept as written (scalars, per-layer gradients, `{filter, value}` lists);
`merge.params` resolves them per tensor. Besides mergekit's merge keys, `tokenizer_source`, the
`tokenizer:` block (merge.tokenizer.config) and `chat_template` are parsed here; a model
reference is one string, `model` or `model+adapter` (a LoRA applied to the model, merge.lora).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from merge.chat_templates import NAMED_TEMPLATES
from merge.errors import RecipeError, check_keys
from merge.tokenizer.config import TokenizerSpec, parse_source, parse_tokenizer

# dtype names a recipe may use → canonical torch names (mergekit accepts the same spellings).
DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
TOP_KEYS = ("merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
            "tokenizer_source", "tokenizer", "chat_template", "name")
# Keys of mergekit recipes mergenet refuses, each with what to write instead.
REFUSED_KEYS = {"modules": "per-module recipes (`modules:`, for multimodal models) are not supported; "
                           "write the merge of the language model with 'models' or 'slices'"}
AUTO_TEMPLATE = "auto"  # chat_template: the template most input models share
MIN_TEMPLATE = 20  # mergekit's shortest literal Jinja template
LORA_SEP = "+"  # `model+adapter`: a PEFT LoRA adapter applied to the model before merging
MODEL_KEYS = ("model", "parameters")
SLICE_KEYS = ("sources", "parameters", "base_model")
SOURCE_KEYS = ("model", "layer_range", "parameters")


@dataclass(frozen=True)
class SliceSource:
    """One input of an output slice: `layer_range` [start, end) of `model`."""

    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Slice:
    """A block of output layers taken from the same layer count of every source."""

    sources: tuple[SliceSource, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A validated merge recipe. Parameter dicts hold raw settings; treat them as read-only."""

    merge_method: str
    models: tuple[ModelEntry, ...] = ()
    slices: tuple[Slice, ...] = ()
    base_model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None  # as written; `tokenizer_spec` is what it means
    name: str | None = None
    tokenizer: TokenizerSpec | None = None
    chat_template: str | None = None

    @property
    def tokenizer_spec(self) -> TokenizerSpec | None:
        """The output vocabulary's settings from `tokenizer` or `tokenizer_source`; None: the
        inputs share one vocabulary, whose files are copied."""
        if self.tokenizer is not None:
            return self.tokenizer
        return TokenizerSpec(self.tokenizer_source) if self.tokenizer_source else None

    def model_refs(self) -> list[str]:
        """Every model the recipe names (base first), each once, in order of appearance; a
        `model+adapter` reference is one entry."""
        refs = [self.base_model] if self.base_model else []
        refs += [m.model for m in self.models]
        for s in self.slices:
            refs += ([s.base_model] if s.base_model else []) + [src.model for src in s.sources]
        if self.tokenizer_spec is not None:
            refs += self.tokenizer_spec.model_refs()
        return list(dict.fromkeys(refs))

    def with_models(self, mapping: Mapping[str, str]) -> Recipe:
        """The same recipe with model references replaced (refs missing from `mapping` stay)."""

        def sub(ref: str | None) -> str | None:
            return None if ref is None else str(mapping.get(ref, ref))

        tok = self.tokenizer_source
        if tok is not None:
            tok = parse_source(tok, "tokenizer_source", lambda ref, _: str(sub(ref)))
        return Recipe(
            merge_method=self.merge_method,
            models=tuple(ModelEntry(sub(m.model), m.parameters) for m in self.models),
            slices=tuple(
                Slice(tuple(SliceSource(sub(src.model), src.layer_range, src.parameters) for src in s.sources),
                      s.parameters, sub(s.base_model))
                for s in self.slices
            ),
            base_model=sub(self.base_model), parameters=self.parameters, dtype=self.dtype,
            out_dtype=self.out_dtype, tokenizer_source=tok, name=self.name,
            tokenizer=self.tokenizer.with_models(sub) if self.tokenizer else None, chat_template=self.chat_template,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data in mergekit's layout; `load_recipe(r.to_dict()) == r`."""
        out: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model:
            out["base_model"] = self.base_model
        if self.models:
            out["models"] = [{"model": m.model, **({"parameters": copy.deepcopy(m.parameters)} if m.parameters else {})}
                             for m in self.models]
        if self.slices:
            out["slices"] = [_slice_dict(s) for s in self.slices]
        if self.parameters:
            out["parameters"] = copy.deepcopy(self.parameters)
        for key in ("dtype", "out_dtype", "tokenizer_source", "chat_template", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.tokenizer is not None:
            out["tokenizer"] = self.tokenizer.to_dict()
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _slice_dict(s: Slice) -> dict[str, Any]:
    sources = []
    for src in s.sources:
        d: dict[str, Any] = {"model": src.model, "layer_range": list(src.layer_range)}
        if src.parameters:
            d["parameters"] = copy.deepcopy(src.parameters)
        sources.append(d)
    out: dict[str, Any] = {"sources": sources}
    if s.parameters:
        out["parameters"] = copy.deepcopy(s.parameters)
    if s.base_model:
        out["base_model"] = s.base_model
    return out


def load_recipe(source: Path | str | Mapping[str, Any]) -> Recipe:
    """Parse a recipe from a YAML file path, a YAML string or a mapping; RecipeError if invalid."""
    where = "recipe"
    if isinstance(source, Mapping):
        data = source
    else:
        text = str(source)
        path = Path(text)
        if isinstance(source, Path) or ("\n" not in text and (path.suffix in (".yaml", ".yml") or path.is_file())):
            where = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
            except UnicodeDecodeError:
                raise RecipeError(f"recipe {path} is not UTF-8 text; a recipe is a YAML file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where} must be a YAML mapping with at least a 'merge_method' key")
    return _parse(data, where)


def _parse(data: Mapping[str, Any], where: str) -> Recipe:
    from merge.methods import METHODS  # here, not at import: methods import torch

    for key, why in REFUSED_KEYS.items():
        if key in data:
            raise RecipeError(f"{where}: {why}")
    check_keys(data, TOP_KEYS, where)
    method = data.get("merge_method")
    if not isinstance(method, str) or method not in METHODS:
        raise RecipeError(f"{where}: unknown merge_method {method!r}; supported: {', '.join(sorted(METHODS))}")
    models = tuple(_model(m, f"{where}: models[{i}]") for i, m in enumerate(_list(data, "models", where)))
    slices = tuple(_slice(s, f"{where}: slices[{i}]") for i, s in enumerate(_list(data, "slices", where)))
    if models and slices:
        raise RecipeError(f"{where}: give either 'models' or 'slices', not both")
    if not models and not slices:
        raise RecipeError(f"{where}: no input models; add a 'models' list (or 'slices' with sources)")
    base = _ref(data.get("base_model"), f"{where}: base_model", optional=True)
    tok = data.get("tokenizer_source")
    if tok is not None:
        tok = parse_source(tok, f"{where}: tokenizer_source", _ref)
    block = data.get("tokenizer")
    if block is not None:
        if tok is not None:
            raise RecipeError(f"{where}: give either 'tokenizer' or 'tokenizer_source', not both")
        block = parse_tokenizer(block, f"{where}: tokenizer", _ref)
    recipe = Recipe(
        merge_method=method, models=models, slices=slices, base_model=base,
        parameters=_params(data.get("parameters"), f"{where}: parameters"),
        dtype=_dtype(data.get("dtype"), f"{where}: dtype"),
        out_dtype=_dtype(data.get("out_dtype"), f"{where}: out_dtype"),
        tokenizer_source=tok, name=data.get("name"), tokenizer=block,
        chat_template=_chat_template(data.get("chat_template"), f"{where}: chat_template"),
    )
    _check_method(recipe, where)
    return recipe


def _check_method(recipe: Recipe, where: str) -> None:
    """Parameter names and model counts the chosen method can use."""
    from merge.methods import METHODS, RECIPE_PARAMS

    method = METHODS[recipe.merge_method]
    known = {p.name for p in method.params} | set(RECIPE_PARAMS)
    scopes = [("parameters", recipe.parameters)] + [(f"models[{i}].parameters", m.parameters)
                                                     for i, m in enumerate(recipe.models)]
    for i, s in enumerate(recipe.slices):
        scopes.append((f"slices[{i}].parameters", s.parameters))
        scopes += [(f"slices[{i}].sources[{j}].parameters", src.parameters) for j, src in enumerate(s.sources)]
    for scope, params in scopes:
        for name in params:
            if name not in known:
                raise RecipeError(f"{where}: {scope}: unknown parameter {name!r} for {method.name}; "
                                  f"supported: {', '.join(sorted(known))}")
    if method.needs_base and not recipe.base_model and not any(s.base_model for s in recipe.slices):
        raise RecipeError(f"{where}: merge_method {method.name} needs a base_model")


def _chat_template(value: Any, where: str) -> str | None:
    """`auto`, a template name or a literal Jinja template (mergekit's rules for telling them apart)."""
    if value is None:
        return None
    if isinstance(value, str) and (value == AUTO_TEMPLATE or value in NAMED_TEMPLATES
                                   or (len(value) >= MIN_TEMPLATE and "{" in value)):
        return value
    raise RecipeError(f"{where} must be 'auto', one of {', '.join(NAMED_TEMPLATES)} or a Jinja template, "
                      f"got {value!r}")


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecipeError(f"{where}: '{key}' must be a list")
    return value


def _ref(value: Any, where: str, optional: bool = False) -> str | None:
    """A model reference as one string: `path`, `org/name[@revision]`, `sha256:…`, each optionally
    `+adapter`; mergekit's long form `{model: {path, revision}, lora: {path, revision}}` too."""
    if value is None and optional:
        return None
    if isinstance(value, Mapping) and "model" in value:
        check_keys(value, ("model", "lora"), where)
        model = _path(value["model"], where)
        value = model + (LORA_SEP + _path(value["lora"], f"{where}.lora") if value.get("lora") else "")
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(f"{where} must be a model folder path, a Hugging Face name or a model id "
                          f"(sha256:...), got {value!r}")
    if value.count(LORA_SEP) > 1 or any(not part.strip() for part in value.split(LORA_SEP)):
        raise RecipeError(f"{where}: {value!r} must be MODEL or MODEL+ADAPTER")
    return value.strip()


def _path(value: Any, where: str) -> str:
    """mergekit's ModelPath: a string or {path, revision}, as `path[@revision]`."""
    if isinstance(value, Mapping):
        check_keys(value, ("path", "revision"), where)
        path, rev = value.get("path"), value.get("revision")
        if not isinstance(path, str) or not path or (rev is not None and not isinstance(rev, str)):
            raise RecipeError(f"{where} needs a string 'path' (and optionally a string 'revision')")
        return f"{path}@{rev}" if rev else path
    if not isinstance(value, str):
        raise RecipeError(f"{where} must be a model path or {{path, revision}}, got {value!r}")
    return value


def _model(entry: Any, where: str) -> ModelEntry:
    if isinstance(entry, str):
        return ModelEntry(_ref(entry, where))
    if not isinstance(entry, Mapping):
        raise RecipeError(f"{where} must be a mapping with a 'model' key")
    check_keys(entry, MODEL_KEYS, where)
    return ModelEntry(_ref(entry.get("model"), f"{where}.model"),
                      _params(entry.get("parameters"), f"{where}.parameters"))


def _slice(entry: Any, where: str) -> Slice:
    if not isinstance(entry, Mapping):
        raise RecipeError(f"{where} must be a mapping with a 'sources' list")
    check_keys(entry, SLICE_KEYS, where)
    sources = []
    for j, src in enumerate(_list(entry, "sources", where)):
        w = f"{where}.sources[{j}]"
        if not isinstance(src, Mapping):
            raise RecipeError(f"{w} must be a mapping with 'model' and 'layer_range'")
        check_keys(src, SOURCE_KEYS, w)
        lr = src.get("layer_range")
        if (not isinstance(lr, list | tuple) or len(lr) != 2 or not all(isinstance(x, int) for x in lr)
                or lr[0] < 0 or lr[1] <= lr[0]):
            raise RecipeError(f"{w}.layer_range must be [start, end) with 0 <= start < end, got {lr!r}")
        sources.append(SliceSource(_ref(src.get("model"), f"{w}.model"), (lr[0], lr[1]),
                                   _params(src.get("parameters"), f"{w}.parameters")))
    if not sources:
        raise RecipeError(f"{where}.sources must list at least one model")
    lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
    if len(lengths) != 1:
        raise RecipeError(f"{where}: every source's layer_range must span the same number of layers")
    return Slice(tuple(sources), _params(entry.get("parameters"), f"{where}.parameters"),
                 _ref(entry.get("base_model"), f"{where}.base_model", optional=True))


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where} must be a mapping of parameter names to values")
    out = {}
    for name, setting in value.items():
        _check_setting(setting, f"{where}.{name}")
        out[str(name)] = copy.deepcopy(setting)
    return out


def _check_setting(setting: Any, where: str) -> None:
    """Scalar, list of scalars (a gradient over layers), or one {filter, value} or a list of them."""
    if isinstance(setting, bool | int | float | str):
        return
    if isinstance(setting, Mapping):
        setting = [setting]
    if isinstance(setting, list) and setting:
        if all(isinstance(x, bool | int | float | str) for x in setting):
            return
        if all(isinstance(x, Mapping) for x in setting):
            for i, cond in enumerate(setting):
                check_keys(cond, ("filter", "value"), f"{where}[{i}]")
                if "value" not in cond:
                    raise RecipeError(f"{where}[{i}] needs a 'value'")
                if cond.get("filter") is not None and not isinstance(cond["filter"], str):
                    raise RecipeError(f"{where}[{i}].filter must be a string (a substring of tensor names)")
                _check_setting(cond["value"], f"{where}[{i}].value")
            return
    raise RecipeError(f"{where} must be a number, a list of numbers (per-layer gradient) "
                      f"or {{filter, value}} entries, got {setting!r}")


def _dtype(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in DTYPES:
        raise RecipeError(f"{where} must be one of {', '.join(sorted(DTYPES))}, got {value!r}")
    return DTYPES[value]
