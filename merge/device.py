"""Where the engine computes: the one device picker for merge, search, eval and fusion.

    dev = pick_device("auto")                 # CUDA when present, else CPU
    dev = pick_device(flag, recipe.device)    # an explicit flag wins over the recipe's setting
"""

from __future__ import annotations

import torch

from merge.errors import MergeInputError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(requested: str = "auto", fallback: str = "auto") -> torch.device:
    """`requested`, else (when it is `auto`) `fallback`; `auto` → CUDA when available, else CPU.
    `cuda` or `cuda:N` without a GPU, or an unknown name, is an input error (exit 2)."""
    choice = requested if requested != "auto" else fallback
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice != "cpu" and choice != "cuda" and not choice.startswith("cuda:"):
        raise MergeInputError(f"unknown device {choice!r}; use one of {', '.join(DEVICES)}")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise MergeInputError(f"device {choice} was requested but no CUDA GPU is available; use cpu or auto")
    return torch.device(choice)
