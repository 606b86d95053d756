"""Arithmetic problems for the small-scale study: generators, disjoint splits, task files.

Three skills, written the way the model sees them (one problem per sequence, char-level):
    add        "347+58=405"            a in 0..999, b in 0..99
    mul        "7*86=602"              a in 0..9,   b in 0..99
    composite  "7*86+58=602+58=660"    the product, then the sum (a scratchpad of both skills)
Every problem belongs to exactly one split (train / val / test) by a hash of its operands, so the
search's fitness set (val) and the reported numbers (test) never contain a training item.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

SPLITS = ("train", "val", "test")
# Share of the problem space held out for validation (search fitness) and for test.
HELD_OUT = {"val": 0.1, "test": 0.1}


def split_of(key: str) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32
    if h < HELD_OUT["val"]:
        return "val"
    if h < HELD_OUT["val"] + HELD_OUT["test"]:
        return "test"
    return "train"


def problem(skill: str, rng: random.Random) -> tuple[str, str, str]:
    """(key, prompt, answer) of one random problem of a skill."""
    if skill == "add":
        a, b = rng.randint(0, 999), rng.randint(0, 99)
        return f"add:{a},{b}", f"{a}+{b}=", f"{a + b}"
    if skill == "mul":
        a, b = rng.randint(0, 9), rng.randint(0, 99)
        return f"mul:{a},{b}", f"{a}*{b}=", f"{a * b}"
    if skill == "composite":
        a, b, c = rng.randint(0, 9), rng.randint(0, 99), rng.randint(0, 99)
        return f"comp:{a},{b},{c}", f"{a}*{b}+{c}=", f"{a * b}+{c}={a * b + c}"
    raise ValueError(f"unknown skill {skill!r}")


def sample(skill: str, split: str, n: int, seed: int) -> list[tuple[str, str]]:
    """`n` distinct (prompt, answer) pairs of a skill from one split (training draws repeat)."""
    rng = random.Random(f"{skill}/{split}/{seed}")
    seen: set[str] = set()
    out = []
    for _ in range(200 * n + 10_000):  # held-out splits are finite: fail instead of looping forever
        if len(out) == n:
            return out
        key, prompt, answer = problem(skill, rng)
        if split_of(key) != split or (split != "train" and key in seen):
            continue
        seen.add(key)
        out.append((prompt, answer))
    if len(out) < n:
        raise ValueError(f"the {split} split of {skill} has fewer than {n} distinct problems")
    return out


def training_text(mix: dict[str, int], seed: int) -> list[str]:
    """Training sequences ("prompt+answer") with `mix[skill]` problems per skill, shuffled."""
    lines = [p + a for skill, n in mix.items() for p, a in sample(skill, "train", n, seed)]
    random.Random(seed).shuffle(lines)
    return lines


def write_tasks(path: Path, split: str, per_skill: int, seed: int,
                skills: tuple[str, ...] = ("add", "mul", "composite")) -> Path:
    """A mergenet task file (generation items, one `task` per skill)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for skill in skills:
            for prompt, answer in sample(skill, split, per_skill, seed):
                fh.write(json.dumps({"prompt": prompt, "answer": answer, "task": skill}) + "\n")
    return path
