"""The model card (README.md) of a fused model: Hub front matter (see merge/card.py; the target
and sources are its `base_model`s, named as the recipe names them), sources, data digest,
settings and results."""

from __future__ import annotations

from typing import Any

import yaml

from merge.card import front_matter
from merge.fusion.recipe import FusionRecipe


def model_card(recipe: FusionRecipe, result: dict[str, Any], version: str = "", license: str | None = None) -> str:
    before, after = result["before"], result["after"]
    sources = "\n".join(f"- `{s}` (aligned on {f:.1%} of target tokens)"
                        for s, f in zip(recipe.sources, result["aligned_fraction"], strict=True))
    weights = ", ".join(f"{w:.3f}" for w in result["mean_weights"])
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
- `{recipe.data}` ({result["examples"]} examples)
- sha256: `{result["data_sha256"]}`

## Settings
```yaml
{yaml.safe_dump(recipe.to_dict(), sort_keys=False).rstrip()}
```

## Results (training data, per response token)
| | LM loss | KL(fused ‖ model) |
|---|---|---|
| before | {before["lm_loss"]:.4f} | {before["fused_kl"]:.4f} |
| after | {after["lm_loss"]:.4f} | {after["fused_kl"]:.4f} |

Device: {result["device"]}; {result["steps"]} optimizer steps.
"""
