"""What a new user hits first, through the real CLI (issue 12): JSON errors, `--version`, id
prefixes, suggested commands that work as printed, and the small messages."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(120)


def test_json_errors_are_one_document_on_stdout(cli, tmp_path):
    res = cli("node", "status", "--node", "127.0.0.1:9", "--json")
    assert res.code == 1
    assert json.loads(res.out) == {"error": res.err.strip().removeprefix("mergenet: error: "), "exit": 1}
    usage = cli("verify", "--json")  # argparse refuses it: exit 2, still one JSON document
    assert usage.code == 2 and json.loads(usage.out)["exit"] == 2
    bad = cli("verify", str(tmp_path / "missing"), "--json")
    assert bad.code == 2 and json.loads(bad.out)["exit"] == 2


def test_version(cli):
    from registry.version import MERGENET_VERSION

    res = cli("--version")
    assert res.code == 0 and res.out.strip() == f"mergenet {MERGENET_VERSION}"


def test_verify_of_a_missing_folder_says_so(cli, tmp_path):
    res = cli("verify", str(tmp_path / "missing"))
    assert res.code == 2 and "no such folder" in res.err
    res = cli("verify", "./missing")
    assert res.code == 2 and "no such folder" in res.err
