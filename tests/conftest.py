"""Shared fixtures: tiny model families (generated once per session, fixed seeds), an isolated
mergenet home, and an in-process CLI runner that returns (exit code, stdout, stderr)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MERGENET_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def families(tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """arch → (base, [expert1, expert2]) for llama, qwen2 and gpt2; read-only: copy before editing."""
    from node.demo.models import ARCHS, make_family

    root = tmp_path_factory.mktemp("families")
    return {arch: make_family(root / arch, arch=arch, n_experts=2, seed=7) for arch in ARCHS}


@pytest.fixture
def model_copy(families, tmp_path) -> Callable[[str, int], Path]:
    """Fresh writable copy of a family member: `model_copy("llama", 0)` is the base, 1.. experts."""

    def copy(arch: str = "llama", index: int = 1) -> Path:
        base, experts = families[arch]
        src = base if index == 0 else experts[index - 1]
        dst = tmp_path / f"{arch}-{index}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def cli(capsys, home) -> Callable[..., CliResult]:
    """Run `mergenet ARGS` in-process against the test home (pass home=... to override)."""
    from node.cli.main import main

    def run(*args: str, home_dir: Path | None = None) -> CliResult:
        capsys.readouterr()
        argv = [str(a) for a in args]
        if "--home" not in argv:
            argv += ["--home", str(home_dir or home)]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
