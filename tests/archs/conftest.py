"""Fixtures for the real-shapes tests: one family (trained base + two experts) per architecture,
built once per session with fixed seeds, and the task file they are evaluated on."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.archs.fixtures import ARCHS, make_family, task_rows
from tests.search.conftest import one_torch_thread, write_jsonl  # noqa: F401  (autouse fixture, reused)


@pytest.fixture(scope="session")
def shaped(tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """arch → (base, [expert1, expert2]); READ-ONLY: copy before submitting or editing."""
    import torch

    root = tmp_path_factory.mktemp("shaped")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {arch: make_family(root / arch, arch, n_experts=2, seed=11) for arch in ARCHS}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shaped_tasks(tmp_path_factory) -> Path:
    """Exact-match and multiple-choice rows over the memorized facts."""
    return write_jsonl(tmp_path_factory.mktemp("shaped-tasks") / "tasks.jsonl", task_rows())


@pytest.fixture
def shaped_copy(shaped, tmp_path) -> Callable[[str, int], Path]:
    """Writable copy of a family member: `shaped_copy("qwen2", 0)` is the base, 1.. the experts."""

    def copy(arch: str, index: int) -> Path:
        base, experts = shaped[arch]
        dst = tmp_path / f"{arch}-{index}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(base if index == 0 else experts[index - 1], dst)
        return dst

    return copy
