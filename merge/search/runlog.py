"""The search's JSONL log: a header naming the search, then one record per evaluation.

    write_header(path, header); append(path, record); header, records = read_log(path)

The log is both the user's record of every evaluation and the resume state: replaying it
through a freshly seeded CMA-ES reproduces the optimizer exactly (nothing is pickled).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from merge.errors import MergeInputError


def write_header(path: Path, header: dict[str, Any]) -> None:
    path.write_text(json.dumps({"type": "header", **header}, sort_keys=True) + "\n")


def append(path: Path, record: dict[str, Any]) -> None:
    """One evaluation, flushed and fsynced: an interrupted search loses at most the one in flight."""
    with path.open("a") as fh:
        fh.write(json.dumps({"type": "eval", **record}, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_log(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, evaluation records in order); a torn last line (killed mid-write) is dropped."""
    if not path.is_file():
        return None, []
    header, records = None, []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise MergeInputError(f"{path} line {number} is not valid JSON; the search log is damaged") from exc
        if obj.get("type") == "header":
            header = obj
        elif obj.get("type") == "eval":
            records.append(obj)
    return header, records
