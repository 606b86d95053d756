"""In-memory candidate merging: every input tensor is read once, a model skeleton is built once
from the base config, and each candidate recipe is merged tensor by tensor with the executor's
own `merge_tensor` and loaded into the skeleton with `load_state_dict` (no disk writes).

    merger = CandidateMerger(recipe, device)
    model = merger.build(candidate_recipe)     # the skeleton, now holding the candidate's weights

Because planning (`plan_merge`) and per-tensor math (`merge_tensor`, seeded per tensor) are the
executor's, a candidate equals what `run_merge` would write for the same recipe. Tensors are
named as in the checkpoint; `checkpoint_keys` maps them to the skeleton's own parameter names
where transformers renames at load (GPT-NeoX's `embed_out` is `lm_head` in transformers 5).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from merge.errors import MergeInputError
from merge.executor import merge_tensor, tensor_generator
from merge.io import DTYPES, ModelReader
from merge.outputs import output_tokenizer_files
from merge.plan import MergePlan, Source, plan_merge
from merge.recipe import Recipe
from merge.tokenizer.embed import align_task

log = logging.getLogger(__name__)


def checkpoint_keys(model) -> dict[str, str]:
    """Checkpoint tensor name → the model's state-dict key, for the names that differ.

    transformers 5 renames some checkpoint tensors when `from_pretrained` loads them and renames
    them back in `save_pretrained`; `load_state_dict` knows only the model's names. The reverse
    renaming is read from transformers itself, so it follows whatever mapping the installed
    version applies; tensors are matched by storage, since a rename keeps the tensor object."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4 loads checkpoint names as they are
        return {}
    own = model.state_dict()
    by_storage: dict[int, list[str]] = {}
    for key, t in own.items():
        by_storage.setdefault(t.data_ptr(), []).append(key)
    out = {}
    for name, t in revert_weight_conversion(model, dict(own)).items():
        keys = by_storage.get(t.data_ptr(), [])
        if name not in keys and len(keys) == 1:
            out[name] = keys[0]
    return out


def _output_tokenizer(plan: MergePlan, auto_tokenizer: Any) -> Any:
    """The tokenizer `run_merge` would write for this plan: the source's as it is, or, when the
    recipe builds one (`tokenizer_source: union`, `tokenizer:`), the built one, so candidates are
    scored on the token ids the merged model will be used with."""
    if plan.vocab is None:
        return auto_tokenizer.from_pretrained(plan.tokenizer_model)
    with tempfile.TemporaryDirectory(prefix="search-tokenizer-") as tmp:
        for name, data in output_tokenizer_files(plan).items():
            (Path(tmp) / name).write_bytes(data)
        return auto_tokenizer.from_pretrained(tmp)


class CandidateMerger:
    """Holds the inputs' tensors (float32) and one model skeleton for a fixed set of models."""

    def __init__(self, recipe: Recipe, device: torch.device) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.device = device
        self.readers: dict[str, ModelReader] = {}
        plan = plan_merge(recipe, self.readers)
        self.n_layers = plan.n_layers
        self._cache: dict[Source, torch.Tensor] = {}
        for task in plan.tasks:
            for src in (*task.inputs, task.base):
                if src is not None and src not in self._cache:
                    self._cache[src] = self.readers[src.model].get(src.tensor, device=device)
        config = AutoConfig.from_pretrained(plan.config_model)
        if plan.vocab_rows is not None:  # tokenizer settings: the output vocabulary's row count
            config.vocab_size = plan.vocab_rows
        self.model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device).eval()
        self.tokenizer = _output_tokenizer(plan, AutoTokenizer)
        self._keys = checkpoint_keys(self.model)
        log.info("cached %d input tensors for %d output tensors", len(self._cache), len(plan.tasks))

    def state_dict(self, recipe: Recipe) -> dict[str, torch.Tensor]:
        """The merged tensors of `recipe` (same models as the constructor's), in their output
        dtype, as `run_merge` would write them."""
        plan = plan_merge(recipe, self.readers)
        requested = recipe.out_dtype or recipe.dtype
        out = {}
        for task in plan.tasks:
            missing = [s for s in (*task.inputs, task.base) if s is not None and s not in self._cache]
            if missing:
                raise MergeInputError(f"candidate recipe reads tensor {missing[0].tensor} of {missing[0].model}, "
                                      "which the search did not load; candidates must use the recipe's models")
            gen = tensor_generator(task.seed, task.name, self.device) if plan.method.randomized else None
            inputs, base = [self._cache[s] for s in task.inputs], self._cache[task.base] if task.base else None
            if task.vocab is not None:  # rows re-indexed to the output vocabulary, as the executor does
                inputs, base = align_task(task.vocab, task, inputs, base)
            merged = merge_tensor(task, inputs, base, method=plan.method, device=self.device, generator=gen)
            dtype = getattr(torch, requested) if requested and task.mergeable else DTYPES[task.dtype]
            out[task.name] = merged.to(dtype)
        return out

    def build(self, recipe: Recipe):
        """Load `recipe`'s merged weights into the skeleton and return it (eval mode)."""
        sd = {self._keys.get(k, k): v for k, v in self.state_dict(recipe).items()}
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ())  # a list or a dict, by version
        buffers = dict(self.model.named_buffers())
        really_missing = [k for k in missing if k not in tied and k not in buffers]
        if really_missing or unexpected:
            name = (really_missing or unexpected)[0]
            raise MergeInputError(f"merged tensors do not fit the base config's model: tensor {name} is "
                                  f"{'missing' if really_missing else 'unexpected'}")
        return self.model

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self._cache.clear()
