"""The model card (README.md) of a fused model: Hub front matter (see merge/card.py; the target
and sources are its `base_model`s, named as the recipe names them), sources, data digest,
settings and results.

    text = model_card(recipe, result.to_dict(), version, license)
    card_pattern(recipe, examples=n, data_sha256=hex, device="cpu").fullmatch(text)   # a verifier's check

The data file is named by its file name only: the executor's local path says nothing about the
model, and leaving it out lets a verifier regenerate the card from the recipe alone, up to the
numbers that training measured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from merge.card import front_matter
from merge.fusion.recipe import FusionRecipe

# Stands in for a measured value while the pattern of possible cards is built.
_MARK = "\x00"
NUMBER = r"-?(?:\d+(?:\.\d+)?|inf|nan)%?"


def model_card(recipe: FusionRecipe, result: dict[str, Any], version: str = "",
               license: str | None = None) -> str:
    before, after = result["before"], result["after"]
    sources = "\n".join(f"- `{s}` (aligned on {f:.1%} of target tokens)"
                        for s, f in zip(recipe.sources, result["aligned_fraction"], strict=True))
    weights = ", ".join(f"{w:.3f}" for w in result["mean_weights"])
    data = Path(recipe.data).name
    meta = front_matter([recipe.target, *recipe.sources], license, ["fusion", recipe.fusion])
    return f"""{meta}# Fused model

Trained by mergenet{f' {version}' if version else ''} with distribution fusion (FuseLLM / FuseChat): the target was
trained on λ·LM loss + (1−λ)·cross-entropy to the fused top-{recipe.top_k} distributions of its
sources on instruction–response data.

## Target
- `{recipe.target}`

## Sources
{sources}

Mean fusion weights (target first, then sources): {weights}

## Data
- `{data}` ({result["examples"]} examples)
- sha256: `{result["data_sha256"]}`

## Settings
```yaml
{yaml.safe_dump({**recipe.to_dict(), "data": data}, sort_keys=False).rstrip()}
```

## Results (training data, per response token)
| | LM loss | KL(fused ‖ model) |
|---|---|---|
| before | {before["lm_loss"]:.4f} | {before["fused_kl"]:.4f} |
| after | {after["lm_loss"]:.4f} | {after["fused_kl"]:.4f} |

Device: {result["device"]}; {result["steps"]} optimizer steps.
"""


class _Measured:
    """A value only the training run knows (losses, weights, alignment, steps): formats as a mark."""

    def __format__(self, spec: str) -> str:
        return _MARK


def card_pattern(recipe: FusionRecipe, *, examples: int, data_sha256: str, device: str,
                 version: str = "", license: str | None = None) -> re.Pattern[str]:
    """Every card `model_card` writes for `recipe` trained on `examples` lines of data with this
    digest on `device`, whatever training measured: the measured values are free numbers, all
    other text is fixed (so a card that passes carries no other text, markup or claims)."""
    m = _Measured()
    metrics = {"lm_loss": m, "fused_kl": m}
    result = {"before": metrics, "after": metrics, "aligned_fraction": [m] * len(recipe.sources),
              "mean_weights": [m] * (1 + len(recipe.sources)), "examples": examples, "data_sha256": data_sha256,
              "device": device, "steps": m}
    text = model_card(recipe, result, version, license)
    return re.compile("".join(NUMBER if part == _MARK else re.escape(part) for part in re.split(f"({_MARK})", text)))
