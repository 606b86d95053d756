"""Evaluation harness: batches tasks, scores them with `scoring.py`, aggregates accuracies.

    model, tok = load_model("path/to/model", device=pick_device("auto"))
    result = evaluate(model, tok, load_tasks("tasks.jsonl"), device=pick_device("auto"))
    result.accuracy, result.tasks, result.n

Generation items: greedy continuation, exact match of the normalized first answer.
Multiple-choice items: the choice with the highest summed log-likelihood wins.
Every item also gets the log-likelihood of its gold answer, which `fitness` uses to break
accuracy ties (a smooth signal the search can climb while accuracy is flat).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from merge.errors import MergeError, MergeInputError
from merge.eval.scoring import (
    GEN_MARGIN_TOKENS,
    check_ids,
    continuation_logprobs,
    embedding_rows,
    encode_pair,
    exact_match,
    generate_greedy,
    pad_id,
)
from merge.eval.tasks import Task

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_NEW_TOKENS = 16


@dataclass(frozen=True)
class EvalResult:
    """Micro-averaged `accuracy` over `n` items, per-task accuracies, and the mean per-token
    log-probability of the gold answers (`loglik`, ≤ 0)."""

    accuracy: float
    tasks: dict[str, float]
    n: int
    loglik: float
    correct: tuple[bool, ...] = field(default=(), repr=False)

    @property
    def fitness(self) -> float:
        """Accuracy plus a tie-breaker below one item's worth: exp(loglik) / (n + 1) < 1 / n,
        so a higher accuracy always wins and equal accuracies are ordered by likelihood."""
        return self.accuracy + math.exp(self.loglik) / (self.n + 1)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "tasks": dict(self.tasks), "n": self.n, "loglik": self.loglik}


def load_model(model_dir: str | Path, device: torch.device | None = None):
    """Load an HF causal LM folder (safetensors only, float32) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code never draws on the terminal
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MergeInputError(f"model folder {model_dir} has no config.json; pass a Hugging Face style model folder")
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"cannot load model folder {model_dir}: {str(exc).splitlines()[0]}") from exc
    model.to(device or torch.device("cpu")).eval()
    return model, tok


def _batches(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def evaluate(model, tokenizer, tasks: Sequence[Task], *, device: torch.device | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score `tasks` with a loaded model (which must already sit on `device`)."""
    if batch_size < 1 or max_new_tokens < 1:
        raise MergeInputError("batch size and max new tokens must be positive integers")
    if not tasks:
        raise MergeInputError("no tasks to evaluate")
    device = device or next(model.parameters()).device
    n_rows = embedding_rows(model)
    pad = pad_id(tokenizer, n_rows)

    def encode(prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        ctx, cont = encode_pair(tokenizer, prompt, continuation)
        check_ids(tokenizer, [ctx + cont], n_rows)
        return ctx, cont

    correct = [False] * len(tasks)
    gold_lp, gold_tokens = 0.0, 0
    # Sort by prompt length so batches pad little; results go back to their original index.
    order = sorted(range(len(tasks)), key=lambda i: len(tasks[i].prompt))
    gen = [i for i in order if not tasks[i].is_choice]
    mc = [i for i in order if tasks[i].is_choice]
    total, done = len(tasks), 0
    for batch in _batches(gen, batch_size):
        answers = [str(tasks[i].answer) for i in batch]
        longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        outs = generate_greedy(model, tokenizer, [tasks[i].prompt for i in batch],
                               min(max_new_tokens, longest + GEN_MARGIN_TOKENS), device)
        pairs = [encode(tasks[i].prompt, a) for i, a in zip(batch, answers, strict=True)]
        for i, out, (lp, k) in zip(batch, outs, continuation_logprobs(model, pairs, pad, device), strict=True):
            correct[i] = exact_match(out, str(tasks[i].answer))
            gold_lp, gold_tokens = gold_lp + lp, gold_tokens + k
        done += len(batch)
        if progress:
            progress(done, total)
    # Multiple choice: every (item, choice) pair is one scored row; items are packed so that a
    # batch holds about `batch_size` rows.
    rows = [(i, c) for i in mc for c in range(len(tasks[i].choices))]
    scores: dict[int, list[float]] = {i: [] for i in mc}
    for batch in _batches(range(len(rows)), batch_size):
        picked = [rows[r] for r in batch]
        pairs = [encode(tasks[i].prompt, tasks[i].choices[c]) for i, c in picked]
        for (i, c), (lp, k) in zip(picked, continuation_logprobs(model, pairs, pad, device), strict=True):
            scores[i].append(lp)
            if c == tasks[i].answer:
                gold_lp, gold_tokens = gold_lp + lp, gold_tokens + k
            if c == len(tasks[i].choices) - 1:
                correct[i] = max(range(len(scores[i])), key=scores[i].__getitem__) == tasks[i].answer
                done += 1
        if progress:
            progress(done, total)
    if any(math.isnan(s) for v in scores.values() for s in v) or math.isnan(gold_lp):
        raise MergeError("the model produced NaN log-probabilities; its weights are probably broken")
    per_task: dict[str, list[bool]] = {}
    for t, ok in zip(tasks, correct, strict=True):
        per_task.setdefault(t.task, []).append(ok)
    return EvalResult(
        accuracy=sum(correct) / len(tasks),
        tasks={name: sum(v) / len(v) for name, v in sorted(per_task.items())},
        n=len(tasks),
        loglik=gold_lp / max(1, gold_tokens),
        correct=tuple(correct),
    )
