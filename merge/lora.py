"""`model+adapter` inputs: a PEFT LoRA adapter applied to its model's tensors as they are read.

    reader = open_reader("/m/base+/m/math-lora")   # a ModelReader whose tensors include W + ΔW
    model, adapter = split_ref("/m/base+/m/math-lora")
    adapter = LoraAdapter(Path("/m/math-lora"))     # adapter_config.json + adapter_model.safetensors

What mergekit does by merging the adapter into a copy of the model first (peft's
`merge_and_unload`), done per tensor: for every target module, W += (B @ A) · α / r (α / √r
with `use_rslora`; r is A's row count, α per module from `alpha_pattern`), transposed for
`fan_in_fan_out` adapters (GPT-2's Conv1D stores weights as in × out), and embedding LoRAs
(`lora_embedding_A/B`) as (B @ A)ᵀ; tensors the adapter saves whole (`modules_to_save`, or a
target's own weights as `….base_layer.weight`) replace the model's. The sum is computed in
float32 and stored back in the model's dtype, as the merged copy mergekit reads would be. Only
safetensors adapters are read: `adapter_model.bin` is refused, never unpickled; DoRA adapters
and LoRA biases are refused by name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merge.errors import MergeInputError
from merge.io import ModelReader

SEP = "+"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_ADAPTER = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."
# lora_A / lora_B (Linear, Conv1D) and lora_embedding_A / _B (Embedding), optionally with the
# adapter's name ("default") that some saving code leaves in.
LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                      r"(?:\.[A-Za-z0-9_]+)?(?:\.weight)?$")
BASE_LAYER = ".base_layer."  # peft's name for the wrapped layer's own weights, when it saves them
REFUSED_KEY = re.compile(r"lora_magnitude_vector|lora_bias|\.lora_[A-Za-z_]*\.bias$")


def split_ref(ref: str) -> tuple[str, str | None]:
    """`model+adapter` → (model, adapter); a folder that exists (even with a + in its name) → (ref, None)."""
    if SEP in ref and not Path(ref).exists():
        model, adapter = ref.rsplit(SEP, 1)
        return model, adapter
    return ref, None


def open_reader(ref: str) -> ModelReader:
    """A reader of the model `ref` names, with its adapter applied when it names one."""
    model, adapter = split_ref(ref)
    return ModelReader(model) if adapter is None else LoraReader(model, LoraAdapter(Path(adapter)))


@dataclass(frozen=True)
class _Update:
    a: str  # adapter tensor names
    b: str
    scale: float
    transpose: bool


class LoraAdapter:
    """A PEFT LoRA adapter folder: which model tensors it changes and by how much."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        config = self._config()
        if config.get("use_dora"):
            raise MergeInputError(f"adapter {self.folder} is a DoRA adapter (use_dora); only plain LoRA adapters "
                                  "can be applied")
        if not (self.folder / ADAPTER_WEIGHTS).is_file():
            hint = (f" ({PICKLED_ADAPTER} is a pickled checkpoint and is never opened; convert it to safetensors)"
                    if (self.folder / PICKLED_ADAPTER).exists() else "")
            raise MergeInputError(f"adapter {self.folder} has no {ADAPTER_WEIGHTS}{hint}")
        self.reader = ModelReader(self.folder)
        self.updates: dict[str, _Update] = {}
        self.replaced: dict[str, str] = {}  # model tensor → adapter tensor saved whole
        parts: dict[str, dict[str, str]] = {}
        for key in self.reader.names():
            name = key.removeprefix(PEFT_PREFIX)
            if REFUSED_KEY.search(name):
                raise MergeInputError(f"adapter {self.folder}: tensor {key} (DoRA magnitudes or LoRA biases) "
                                      "cannot be applied; only lora_A/lora_B weights can")
            m = LORA_KEY.match(name)
            if m is None:  # saved whole: `modules_to_save`, or a target's own weights (`….base_layer.weight`)
                self.replaced[name.replace(BASE_LAYER, ".")] = key
                continue
            parts.setdefault(m["module"], {})[m["kind"]] = key
        for module, kinds in parts.items():
            self.updates.update(self._update(module, kinds, config))

    def _config(self) -> dict[str, Any]:
        path = self.folder / ADAPTER_CONFIG
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MergeInputError(f"{self.folder} is not a LoRA adapter folder (no {ADAPTER_CONFIG})") from None
        except (OSError, ValueError) as exc:
            raise MergeInputError(f"cannot read {path}: {exc}") from exc
        if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
            raise MergeInputError(f"{path}: peft_type must be LORA, got {config.get('peft_type')!r}")
        return config

    def _update(self, module: str, kinds: dict[str, str], config: dict[str, Any]) -> dict[str, _Update]:
        embedding = "lora_embedding_A" in kinds or "lora_embedding_B" in kinds
        a, b = (kinds.get("lora_embedding_A"), kinds.get("lora_embedding_B")) if embedding else \
               (kinds.get("lora_A"), kinds.get("lora_B"))
        if a is None or b is None:
            raise MergeInputError(f"adapter {self.folder}: module {module} has only one of its two LoRA matrices")
        r = self.reader.info(a).shape[0]  # A is r × in (lora_embedding_A: r × vocabulary)
        alpha = float(_pattern(config.get("alpha_pattern"), module, config.get("lora_alpha", r)))
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        transpose = embedding or bool(config.get("fan_in_fan_out"))
        return {f"{module}.weight": _Update(a, b, scale, transpose)}

    def delta_shape(self, name: str) -> tuple[int, ...]:
        u = self.updates[name]
        shape = (self.reader.info(u.b).shape[0], self.reader.info(u.a).shape[1])
        return shape[::-1] if u.transpose else shape

    def delta(self, name: str) -> torch.Tensor | None:
        """ΔW for model tensor `name` in float32, or None when the adapter leaves it alone."""
        u = self.updates.get(name)
        if u is None:
            return None
        delta = self.reader.get(u.b) @ self.reader.get(u.a)
        return (delta.T if u.transpose else delta) * u.scale

    def targets(self) -> set[str]:
        return set(self.updates) | set(self.replaced)

    def close(self) -> None:
        self.reader.close()


def _pattern(patterns: Any, module: str, default: Any) -> Any:
    """peft's per-module override: the first key that matches the end of the module's name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class LoraReader(ModelReader):
    """A model folder read with an adapter applied (see the module docstring)."""

    def __init__(self, folder: Path | str, adapter: LoraAdapter) -> None:
        super().__init__(folder)
        self.adapter = adapter
        missing = sorted(t for t in adapter.targets() if not self.has(t))
        if missing:
            raise MergeInputError(f"adapter {adapter.folder} changes tensor {missing[0]}, which model {self.folder} "
                                  "does not have: the adapter was trained for another model")
        for name in adapter.updates:
            shape, got = self.info(name).shape, adapter.delta_shape(name)
            if tuple(got) != tuple(shape):
                raise MergeInputError(f"adapter {adapter.folder}: its update of {name} has shape {list(got)} but the "
                                      f"model's tensor is {list(shape)}")

    # ΔW = B·A is computed for the whole tensor (rows of a product would round differently), so
    # the executor reads these models whole rather than in row pieces.
    ranged = False

    def get_raw(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        if rows is not None:
            whole = self.get_raw(name)
            if not 0 <= rows[0] <= rows[1] <= whole.shape[0]:
                raise MergeInputError(f"rows {rows[0]}..{rows[1]} are outside tensor {name} "
                                      f"of shape {list(whole.shape)}")
            return whole[rows[0]:rows[1]].clone()
        if name in self.adapter.replaced:
            t = self.adapter.reader.get_raw(self.adapter.replaced[name]).to(self.info(name).torch_dtype)
        else:
            t = super().get_raw(name)
        delta = self.adapter.delta(name)
        return t if delta is None else (t.to(torch.float32) + delta).to(t.dtype)

    def close(self) -> None:
        super().close()
        self.adapter.close()
