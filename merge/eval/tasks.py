"""Task files: JSONL parsing and validation into frozen `Task` records (first step of eval).

    tasks = load_tasks("tasks.jsonl")          # raises TaskFileError naming line and field

Generation line:       {"prompt": "12+7=", "answer": "19", "task": "add"}
Multiple-choice line:  {"prompt": "2+2=", "choices": ["3", "4"], "answer": 1, "task": "mc"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merge.errors import MergeInputError

DEFAULT_TASK = "default"
KNOWN_FIELDS = frozenset({"prompt", "answer", "choices", "task", "id"})


class TaskFileError(MergeInputError):
    """A task file that cannot be read as written (exit 2)."""


@dataclass(frozen=True)
class Task:
    """One evaluation item. `choices` is empty for generation items, whose `answer` is text;
    for multiple-choice items `answer` is the index of the right choice."""

    prompt: str
    answer: str | int
    task: str = DEFAULT_TASK
    choices: tuple[str, ...] = ()

    @property
    def is_choice(self) -> bool:
        return bool(self.choices)


def parse_task(obj: Any, where: str) -> Task:
    """Validate one decoded JSON line; `where` (e.g. "tasks.jsonl line 3") prefixes errors."""
    if not isinstance(obj, dict):
        raise TaskFileError(f"{where}: expected a JSON object with 'prompt' and 'answer', got {type(obj).__name__}")
    unknown = sorted(set(obj) - KNOWN_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(KNOWN_FIELDS))
        raise TaskFileError(f"{where}: unknown field '{unknown[0]}'; allowed fields are {allowed}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise TaskFileError(f"{where}: field 'prompt' must be a non-empty string")
    task = obj.get("task", DEFAULT_TASK)
    if not isinstance(task, str) or not task:
        raise TaskFileError(f"{where}: field 'task' must be a non-empty string when present")
    if "answer" not in obj:
        raise TaskFileError(f"{where}: field 'answer' is missing")
    answer = obj["answer"]
    if "choices" not in obj:
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise TaskFileError(f"{where}: field 'answer' must be a string for a generation task")
        text = str(answer)
        if not text.strip():
            raise TaskFileError(f"{where}: field 'answer' must not be blank")
        return Task(prompt=prompt, answer=text, task=task)
    choices = obj["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise TaskFileError(f"{where}: field 'choices' must be a list of at least two non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise TaskFileError(f"{where}: field 'answer' must be a choice index from 0 to {len(choices) - 1}")
    return Task(prompt=prompt, answer=answer, task=task, choices=tuple(choices))


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSONL task file; blank lines are skipped, anything else must be a valid task."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaskFileError(f"task file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"task file {path} cannot be read as UTF-8 text: {exc}") from exc
    tasks = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        tasks.append(parse_task(obj, where))
    if not tasks:
        raise TaskFileError(f"task file {path} holds no tasks; write one JSON object per line")
    return tasks
