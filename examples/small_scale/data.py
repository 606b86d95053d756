"""Arithmetic problems for the small-scale studies: generators, disjoint splits, task and data files.

Three skills, written the way the models see them (one problem per sequence, char-level):
    add        "1347+58=1405"             a in 0..1999, b in 0..99     (skill A)
    mul        "7*186=1302"               a in 0..9,    b in 0..199    (skill B)
    composite  "7*186+58=7*186=1302,1302+58=1360"   a chain: the mul step, then the add step
The composite's answer writes out its two steps as the skills' own problems (a `mul` problem,
then an `add` problem with a ≤ 1791), so a model that has both skills and can copy operands from
the prompt can solve it, and one that has only one skill cannot.

The base (and the fusion study's target) sees every format on the full operand ranges but only
its easy cases (`restricted`): additions without a carry, multiplications by 0 or 1, composites
made of those two. It knows the formats (and copies operands of every length) and is weak at
the skills. Expert A learns addition with carries, expert B multiplication by 2..9; a full-range
composite needs both (and most test composites have a factor ≥ 2 and a carry in the sum).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path

SKILLS = ("add", "mul", "composite")
HELD_OUT = {"val": 0.1, "test": 0.2}  # share of each skill's problem space; the rest is train


def split_of(key: str) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32
    if h < HELD_OUT["val"]:
        return "val"
    if h < HELD_OUT["val"] + HELD_OUT["test"]:
        return "test"
    return "train"


def carries(a: int, b: int) -> bool:
    """Whether the column sum a + b carries anywhere."""
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


def problem(skill: str, rng: random.Random, restricted: bool = False) -> tuple[str, str, str]:
    """(key, prompt, answer) of one random problem of a skill (only its easy cases if `restricted`)."""
    if skill == "add":
        while True:
            a, b = rng.randint(0, 1999), rng.randint(0, 99)
            if not (restricted and carries(a, b)):
                return f"add:{a},{b}", f"{a}+{b}=", f"{a + b}"
    if skill == "mul":
        a, b = rng.randint(0, 1 if restricted else 9), rng.randint(0, 199)
        return f"mul:{a},{b}", f"{a}*{b}=", f"{a * b}"
    if skill == "composite":
        while True:
            a, b, c = rng.randint(0, 1 if restricted else 9), rng.randint(0, 199), rng.randint(0, 99)
            if not (restricted and carries(a * b, c)):
                break
        return f"comp:{a},{b},{c}", f"{a}*{b}+{c}=", f"{a}*{b}={a * b},{a * b}+{c}={a * b + c}"
    raise ValueError(f"unknown skill {skill!r}")


def sample(skill: str, split: str, n: int, seed: int, restricted: bool = False) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs of a skill from one split: distinct for held-out splits,
    drawn with repetition for train."""
    rng = random.Random(f"{skill}/{split}/{seed}/{'small' if restricted else 'full'}")
    seen: set[str] = set()
    out = []
    for _ in range(200 * n + 10_000):  # held-out splits are finite: fail instead of looping forever
        if len(out) == n:
            return out
        key, prompt, answer = problem(skill, rng, restricted)
        if split_of(key) != split or (split != "train" and key in seen):
            continue
        seen.add(key)
        out.append((prompt, answer))
    if len(out) < n:
        raise ValueError(f"the {split} split of {skill} has fewer than {n} distinct problems")
    return out


def training_pairs(mix: dict[str, int], seed: int, restricted: bool = False) -> list[tuple[str, str]]:
    """`mix[skill]` training (prompt, answer) pairs per skill, shuffled."""
    pairs = [pa for skill, n in mix.items() for pa in sample(skill, "train", n, seed, restricted)]
    random.Random(seed).shuffle(pairs)
    return pairs


def write_tasks(path: Path, split: str, per_skill: int, seed: int, skills: Iterable[str] = SKILLS,
                separator: str = "") -> Path:
    """A mergenet task file (generation items, one `task` per skill). `separator` follows each
    prompt (the fusion study's models read "prompt\\n", the format fusion trains on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for skill in skills:
            for prompt, answer in sample(skill, split, per_skill, seed):
                fh.write(json.dumps({"prompt": prompt + separator, "answer": answer, "task": skill}) + "\n")
    return path


def write_instructions(path: Path, pairs: list[tuple[str, str]]) -> Path:
    """A fusion data file: one {"instruction", "response"} object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for prompt, answer in pairs:
            fh.write(json.dumps({"instruction": prompt, "response": answer}) + "\n")
    return path
