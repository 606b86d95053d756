"""Embedding and lm_head rows re-indexed to the output vocabulary before a merge (mergekit's
`PermutedVocabulary`), with the rows an input lacks filled in.

    align = plan_alignment(out, [("/m/base", v0), ("/m/a", v1)], base="/m/base", spec=spec)
    tensors = align.apply([t_base, t_a])        # each (align.rows, hidden), in the same order
    inputs, base = align_task(align, task, inputs, base)   # the executor's view of one task

Per input, each output token gets the input's own row for it. A token an input lacks (or one
`force`d) gets a fill row, by mergekit's rules: a `tokens:` setting (a model's row for the
token, another token's row of a model, or zeros); else the base's row when the base has it;
else the one input that has it; else the mean over the inputs that have it (zeros if none).
Rows past the vocabulary (`pad_to_multiple_of`) are each input's mean row. The merge method
then combines the aligned rows as it does any tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from merge.errors import RecipeError
from merge.tokenizer.build import OutputVocab
from merge.tokenizer.config import MODEL_TOKEN, ZERO, TokenizerSpec
from merge.tokenizer.vocab import ModelVocab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabAlignment:
    """How each of `models` (folder references) is re-indexed: `perms[m][token id]` is model m's
    row for the token or -1; fill row f (for token `fill_ids[f]`) is the mean of rows
    `fill_rows[m][f]` (−1: model m gives none) and replaces a model's own row when `forced[f]`."""

    rows: int
    models: tuple[str, ...]
    perms: tuple[tuple[int, ...], ...]
    fill_ids: tuple[int, ...]
    fill_rows: tuple[tuple[int, ...], ...]
    forced: tuple[bool, ...]

    def is_identity(self, input_rows: Sequence[int]) -> bool:
        """True when aligning changes nothing: same ids everywhere, no forced rows, same size."""
        size = len(self.perms[0])
        same = tuple(range(size))
        return (not any(self.forced) and all(p == same for p in self.perms)
                and all(r == self.rows == size for r in input_rows))

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """`tensors[m]` (rows × …) of `models[m]` → each (self.rows × …), float32 in, float32 out."""
        size, dev = len(self.perms[0]), tensors[0].device
        shape = tuple(tensors[0].shape[1:])

        def index(values: Sequence[int] | Sequence[bool], dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=dev)

        fill_ids = index(self.fill_ids)
        fills = tensors[0].new_zeros((len(self.fill_ids), *shape))
        if self.fill_ids:
            count = torch.zeros(len(self.fill_ids), dtype=tensors[0].dtype, device=dev)
            for t, rows in zip(tensors, self.fill_rows, strict=True):  # summed in model order, as mergekit
                rows_t = index(rows)
                has = rows_t >= 0
                fills[has] += t[rows_t[has]]
                count[has] += 1
            fills /= count.clamp(min=1).view(-1, *([1] * len(shape)))
        forced = fill_ids[index(self.forced, torch.bool)]
        out = []
        for t, perm in zip(tensors, self.perms, strict=True):
            perm_t = index(perm)
            own = perm_t >= 0
            own[forced] = False
            new = t.new_zeros((self.rows, *shape))
            new[:size][own] = t[perm_t[own]]
            lacks = ~own[fill_ids]
            new[fill_ids[lacks]] = fills[lacks]
            if self.rows > size:  # padding rows: the mean row (https://nlp.stanford.edu/~johnhew/vocab-expansion.html)
                new[size:] = new[:size].mean(dim=0)
            out.append(new)
        return out


def plan_alignment(out: OutputVocab, models: Sequence[tuple[str, ModelVocab]], base: str | None,
                   spec: TokenizerSpec) -> VocabAlignment:
    """The alignment of one tensor whose inputs are `models` (folder reference, its vocabulary)."""
    refs = tuple(ref for ref, _ in models)
    perms = tuple(out.permutation(v) for _, v in models)
    fill_ids: list[int] = []
    fill_rows: list[list[int]] = [[] for _ in models]
    forced: list[bool] = []
    vocabs = [(out.own_vocab(v), v.size) for _, v in models]
    for token, tid in out.vocab.items():
        setting = spec.tokens.get(token)
        present = [p[tid] >= 0 for p in perms]
        force = bool(setting and setting.force)
        if not force and all(present):
            continue
        rows = _fill(token, tid, setting, refs, vocabs, perms, present, base)
        fill_ids.append(tid)
        forced.append(force)
        for m in range(len(models)):
            fill_rows[m].append(rows.get(m, -1))
    return VocabAlignment(out.rows, refs, perms, tuple(fill_ids), tuple(tuple(r) for r in fill_rows), tuple(forced))


def _fill(token: str, tid: int, setting: Any, refs: tuple[str, ...], vocabs: list[tuple[dict[str, int], int]],
          perms: tuple[tuple[int, ...], ...], present: list[bool], base: str | None) -> dict[int, int]:
    """{model index: row} whose mean fills token `tid` (empty: zeros); `vocabs`: each input's
    (token → id, embedding rows)."""
    if setting is None:
        holders = [m for m, has in enumerate(present) if has]
        if not holders:
            log.warning("token %r is in no input model: its embedding row is zeros", token)
            return {}
        if len(holders) > 1 and base in refs and present[refs.index(base)]:
            holders = [refs.index(base)]
        return {m: perms[m][tid] for m in holders}
    src = setting.source
    if src is None:
        raise RecipeError(f"tokenizer.tokens[{token!r}] needs a 'source': some input model lacks the token")
    if src.kind == ZERO:
        return {}
    if src.model not in refs:
        raise RecipeError(f"tokenizer.tokens[{token!r}]: its source model {src.model} is not an input of this "
                          "tensor's merge; name one of the models being merged")
    m = refs.index(src.model)
    own, size = vocabs[m]
    if src.kind == MODEL_TOKEN:
        row = src.token_id
        if row is None:
            if src.token not in own:
                raise RecipeError(f"tokenizer.tokens[{token!r}]: token {src.token!r} is not in model {src.model}")
            row = own[src.token]
        if row >= size:
            raise RecipeError(f"tokenizer.tokens[{token!r}]: token id {row} is out of range for model {src.model} "
                              f"({size} rows)")
        return {m: row}
    if perms[m][tid] < 0:
        raise RecipeError(f"tokenizer.tokens[{token!r}]: model {src.model} does not have that token")
    return {m: perms[m][tid]}


def align_task(align: VocabAlignment, task: Any, inputs: list[torch.Tensor], base: torch.Tensor | None,
               ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The aligned tensors of a `merge.plan.TensorTask`'s inputs and base (in the same layout)."""
    by_model = {s.model: t for s, t in zip(task.inputs, inputs, strict=True)}
    if task.base is not None:
        by_model[task.base.model] = base
    done = dict(zip(align.models, align.apply([by_model[m] for m in align.models]), strict=True))
    return [done[s.model] for s in task.inputs], (done[task.base.model] if task.base is not None else None)
