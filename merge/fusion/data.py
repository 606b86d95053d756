"""Instruction–response data for fusion: JSONL, one `{"instruction": ..., "response": ...}` per line.

The data is the first thing a fusion touches, so every defect is reported with the file, the line
and the field, as exit-2 input errors:

    examples = load_examples(Path("train.jsonl"))
    digest = file_sha256(Path("train.jsonl"))   # recorded in the model card
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from merge.errors import MergeInputError

REQUIRED_FIELDS = ("instruction", "response")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Example:
    """One training pair; only the response tokens are scored and distilled."""

    instruction: str
    response: str


def load_examples(path: Path) -> tuple[Example, ...]:
    """Parse a JSONL file; blank lines are skipped, anything else must be a complete example."""
    path = Path(path)
    if not path.is_file():
        raise MergeInputError(f"data file {path} does not exist; give a JSONL file of instruction/response pairs")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            examples.append(_parse_line(path, number, line))
    if not examples:
        raise MergeInputError(f"data file {path} holds no examples; add lines like "
                              '{"instruction": "...", "response": "..."}')
    return tuple(examples)


def _parse_line(path: Path, number: int, line: str) -> Example:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise MergeInputError(f"data file {path} line {number}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise MergeInputError(f"data file {path} line {number}: expected a JSON object with fields "
                              f"{' and '.join(REQUIRED_FIELDS)}")
    for field in REQUIRED_FIELDS:
        if field not in record:
            raise MergeInputError(f"data file {path} line {number}: missing field '{field}'; every line needs "
                                  f"string fields {' and '.join(REQUIRED_FIELDS)}")
        if not isinstance(record[field], str):
            raise MergeInputError(f"data file {path} line {number}: field '{field}' must be a string, "
                                  f"not {type(record[field]).__name__}")
    if not record["response"].strip():
        raise MergeInputError(f"data file {path} line {number}: field 'response' is empty; fusion learns from "
                              "response tokens, so every example needs one")
    return Example(instruction=record["instruction"], response=record["response"])


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes: the data digest written into the model card."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
