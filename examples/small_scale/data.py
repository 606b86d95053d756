"""Arithmetic problems for the small-scale studies: generators, disjoint splits, task and data files.

Three skills, written the way the models see them (one problem per sequence, char-level):
    add        "1347+58=1405"             a in 0..1999, b in 0..99     (skill A)
    mul        "7*186=1302"               a in 0..9,    b in 0..199    (skill B)
    composite  "7*186+58=7*186=1302,1302+58=1360"   a chain: the mul step, then the add step
The composite's answer writes out its two steps as the skills' own problems (a `mul` problem,
then an `add` problem with a ≤ 1791).

Regimes say which cases of a format are drawn (`problem(skill, rng, regime)`):
    easy    no carry in any sum, factors 0 and 1 only      the base's (and fusion target's) data
    carry   sums with or without carries, factors 0 and 1  composites in expert A's data
    factor  no carry, any factor 0..9                      composites in expert B's data
    full    anything                                       add / mul test items, expert data
    both    a carry in the sum AND a factor 2..9           composite val / test items
So the base knows every format on the full operand ranges (it copies operands of every length)
and is weak at both skills; expert A learns carrying, in plain sums and inside the chain; expert
B learns multiplying by 2..9, plainly and inside the chain; a held-out composite needs both at
once, which no single expert was trained on and the joint control (A's and B's data together)
was not either: its data holds each skill's chains, never one with both.
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


REGIMES = ("easy", "carry", "factor", "full", "both")
_FACTORS = {"easy": (0, 1), "carry": (0, 1), "factor": (0, 9), "full": (0, 9), "both": (2, 9)}
_CARRY = {"easy": False, "carry": None, "factor": False, "full": None, "both": True}  # None: either


def problem(skill: str, rng: random.Random, regime: str = "full") -> tuple[str, str, str]:
    """(key, prompt, answer) of one random problem of a skill, drawn from a regime's cases."""
    low, high = _FACTORS[regime]
    want_carry = _CARRY[regime]
    while True:
        if skill == "add":
            a, b = rng.randint(0, 1999), rng.randint(0, 99)
            if want_carry is None or carries(a, b) == want_carry:
                return f"add:{a},{b}", f"{a}+{b}=", f"{a + b}"
        elif skill == "mul":
            a, b = rng.randint(low, high), rng.randint(0, 199)
            return f"mul:{a},{b}", f"{a}*{b}=", f"{a * b}"
        elif skill == "composite":
            a, b, c = rng.randint(low, high), rng.randint(0, 199), rng.randint(0, 99)
            if want_carry is None or carries(a * b, c) == want_carry:
                break
        else:
            raise ValueError(f"unknown skill {skill!r}")
    return f"comp:{a},{b},{c}", f"{a}*{b}+{c}=", f"{a}*{b}={a * b},{a * b}+{c}={a * b + c}"


def sample(skill: str, split: str, n: int, seed: int, regime: str = "full") -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs of a skill from one split: distinct for held-out splits,
    drawn with repetition for train."""
    rng = random.Random(f"{skill}/{split}/{seed}/{regime}")
    seen: set[str] = set()
    out = []
    for _ in range(200 * n + 10_000):  # held-out splits are finite: fail instead of looping forever
        if len(out) == n:
            return out
        key, prompt, answer = problem(skill, rng, regime)
        if split_of(key) != split or (split != "train" and key in seen):
            continue
        seen.add(key)
        out.append((prompt, answer))
    if len(out) < n:
        raise ValueError(f"the {split} split of {skill} has fewer than {n} distinct problems")
    return out


def training_pairs(mix: dict[str, int], seed: int, regime: str = "full") -> list[tuple[str, str]]:
    """`mix[skill]` training (prompt, answer) pairs per skill, shuffled; a key "skill:regime"
    overrides the regime for that entry."""
    pairs = []
    for key, n in mix.items():
        skill, _, own = key.partition(":")
        pairs += sample(skill, "train", n, seed, own or regime)
    random.Random(seed).shuffle(pairs)
    return pairs


def write_tasks(path: Path, split: str, per_skill: int, seed: int, skills: Iterable[str] = SKILLS,
                separator: str = "") -> Path:
    """A mergenet task file (generation items, one `task` per skill). `separator` follows each
    prompt (the fusion study's models read "prompt\\n", the format fusion trains on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for skill in skills:
            # Composite items are drawn from the cases that need both skills at once.
            for prompt, answer in sample(skill, split, per_skill, seed, "both" if skill == "composite" else "full"):
                fh.write(json.dumps({"prompt": prompt + separator, "answer": answer, "task": skill}) + "\n")
    return path


def write_instructions(path: Path, pairs: list[tuple[str, str]]) -> Path:
    """A fusion data file: one {"instruction", "response"} object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for prompt, answer in pairs:
            fh.write(json.dumps({"instruction": prompt, "response": answer}) + "\n")
    return path
