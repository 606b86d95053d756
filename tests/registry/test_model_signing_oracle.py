"""The stock OpenSSF tool is the oracle: `model_signing verify key` accepts what mergenet signs,
rejects it once tampered, and mergenet accepts what `model_signing sign key` writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The tool sits beside the interpreter when the venv's python runs the tests without activation.
_BESIDE = Path(sys.executable).parent / "model_signing"
EXE = str(_BESIDE) if _BESIDE.is_file() else shutil.which("model_signing")
# CI installs the test extras, so there a missing oracle is a broken setup, not a reason to skip.
pytestmark = pytest.mark.skipif(EXE is None and os.environ.get("CI") != "true",
                                reason="model_signing executable (model-signing==1.1.1) not installed")


def ms(*args) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_stock_tool_verifies_mergenet_signature(submitted, home):
    folder, _ = submitted
    res = ms("verify", "key", folder, "--signature", folder / "model.sig", "--public_key",
             home / "identity" / "public_key.pem")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "succeeded" in res.stdout


def test_stock_tool_rejects_tampered_and_foreign_key(submitted, home, cli, other_home):
    folder, _ = submitted
    cli("keygen", home_dir=other_home)
    res = ms("verify", "key", folder, "--signature", folder / "model.sig", "--public_key",
             other_home / "identity" / "public_key.pem")
    assert res.returncode != 0
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    res = ms("verify", "key", folder, "--signature", folder / "model.sig", "--public_key",
             home / "identity" / "public_key.pem")
    assert res.returncode != 0


def test_mergenet_verifies_stock_tool_signature(submitted, home, cli):
    folder, model_id = submitted
    res = ms("sign", "key", folder, "--signature", folder / "model.sig", "--private_key",
             home / "identity" / "private_key.pem")
    assert res.returncode == 0, res.stdout + res.stderr
    out = cli("verify", folder, "--json")
    assert out.code == 0, out.err
    assert json.loads(out.out)["id"] == model_id  # same files, same root digest, same id


def test_plain_model_signing_folder_verifies_with_trusted_pem(model_copy, home, cli, other_home):
    """A folder without mergenet.json (signed by the stock tool) verifies against a trusted PEM."""
    folder = model_copy("qwen2", 1)
    cli("keygen", home_dir=other_home)
    res = ms("sign", "key", folder, "--signature", folder / "model.sig", "--private_key",
             other_home / "identity" / "private_key.pem")
    assert res.returncode == 0, res.stderr
    assert cli("verify", folder).code == 3  # signer unknown: nothing to verify against
    assert cli("trust", "add", other_home / "identity" / "public_key.pem").code == 0
    res = cli("verify", folder, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["name"] is None


def test_signed_ignore_paths_drive_verification(submitted, home, cli):
    """A signer may exclude extra paths (model-signing's --ignore-paths); verify honours what was signed."""
    folder, _ = submitted
    (folder / "notes.txt").write_text("local notes, deliberately unsigned\n")
    res = ms("sign", "key", folder, "--signature", folder / "model.sig", "--private_key",
             home / "identity" / "private_key.pem", "--ignore-paths", folder / "notes.txt")
    assert res.returncode == 0, res.stderr
    out = cli("verify", folder, "--json")
    assert out.code == 0, out.err
    assert "notes.txt" not in json.loads(out.out)["files"]
    (folder / "notes2.txt").write_text("not ignored\n")
    res = cli("verify", folder)
    assert res.code == 3 and "notes2.txt" in res.err
