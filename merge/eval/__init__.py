"""Evaluation: how good is a model on a JSONL task file.

    Task, TaskFileError, load_tasks → tasks.py    (parse and validate the task file)
    normalize, exact_match, ...     → scoring.py  (greedy generation, log-likelihoods)
    evaluate, EvalResult, ...       → harness.py  (batching, device choice, aggregation)
"""

from merge.eval.harness import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, EvalResult, evaluate, load_model
from merge.eval.scoring import exact_match, normalize
from merge.eval.tasks import Task, TaskFileError, load_tasks

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "EvalResult",
    "Task",
    "TaskFileError",
    "evaluate",
    "exact_match",
    "load_model",
    "load_tasks",
    "normalize",
]
