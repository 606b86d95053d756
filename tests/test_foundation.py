"""The foundation: package layout, dependency direction, CLI contract basics, tiny fixtures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(pkg: str) -> set[str]:
    found = set()
    for path in (ROOT / pkg).rglob("*.py"):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:from|import)\s+([a-zA-Z_]+)", line)
            if m:
                found.add(m.group(1))
    return found


def test_dependency_direction():
    assert not _imports("merge") & {"registry", "node", "protos", "hivemind", "grpc"}
    assert not _imports("registry") & {"merge", "node"}


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "node.cli.main", "--help"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert "mergenet" in out


def test_unknown_command_is_usage_error(cli):
    assert cli("no-such-command").code == 2


def test_tiny_families_load_and_differ(families):
    from safetensors.torch import load_file

    for _arch, (base, experts) in families.items():
        b = load_file(str(base / "model.safetensors"))
        e = load_file(str(experts[0] / "model.safetensors"))
        assert b.keys() == e.keys()
        assert any(not (b[k] == e[k]).all() for k in b)
        assert json.loads((base / "config.json").read_text())["model_type"] in {"llama", "qwen2", "gpt2"}


def test_fixtures_are_deterministic(tmp_path):
    from safetensors.torch import load_file

    from node.demo.models import make_model, make_tokenizer

    tok = make_tokenizer(tmp_path / "tok", seed=3)
    a = load_file(str(make_model(tmp_path / "a", "qwen2", seed=3, tokenizer_dir=tok) / "model.safetensors"))
    b = load_file(str(make_model(tmp_path / "b", "qwen2", seed=3, tokenizer_dir=tok) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
