"""What a new user hits first, through the real CLI (issue 12): JSON errors, `--version`, id
prefixes, suggested commands that work as printed, and the small messages."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.node import test_cli_network
from tests.node.netutil import folder_bytes
from tests.node.test_cli_network import wait_for

make_node = test_cli_network.make_node  # the in-process node fixture the network CLI tests use

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


def test_ids_printed_by_ls_remote_can_be_pasted_into_pull_and_show(cli, make_node, model_copy, tmp_path,
                                                                    monkeypatch):
    a = make_node("A")
    b = make_node("B", a.addr)
    folder = model_copy("qwen2", 1)
    model_id = json.loads(cli("submit", folder, "--json", "--node", a.addr, home_dir=a.home.root).out)["id"]
    wait_for(lambda: model_id[:19] in cli("ls", "--remote", "--node", b.addr, home_dir=b.home.root).out)
    listed = cli("ls", "--remote", "--node", b.addr, home_dir=b.home.root).out
    short = next(word for word in listed.split() if model_id.startswith(word) and word != model_id)

    shown = cli("show", short, "--json", "--node", b.addr, home_dir=b.home.root)
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["id"] == model_id
    unknown = cli("pull", "sha256:" + "f" * 12, "--node", b.addr, home_dir=b.home.root)
    assert unknown.code == 2 and "full id" in unknown.err
    pulled = cli("pull", short, "-o", tmp_path / "out", "--node", b.addr, "--json", home_dir=b.home.root)
    assert pulled.code == 0, pulled.err
    assert json.loads(pulled.out)["id"] == model_id and folder_bytes(tmp_path / "out") == folder_bytes(folder)
    assert cli("verify", short, home_dir=b.home.root).code == 0


def test_an_ambiguous_prefix_lists_the_matches():
    from registry.errors import BadModelError, NotFoundError
    from registry.index import pick_one

    ids = ["sha256:ab120" + "0" * 59, "sha256:ab121" + "0" * 59, "sha256:cd" + "0" * 62]
    with pytest.raises(BadModelError, match=r"ambiguous.*ab120.*ab121"):
        pick_one("sha256:ab12", ids, "here")
    assert pick_one("AB120", ids, "here") == ids[0]
    with pytest.raises(NotFoundError, match="no model ef01 here"):
        pick_one("ef01", ids, "here")


def test_the_trust_add_that_pull_suggests_works_as_printed(cli, make_node, model_copy, tmp_path, monkeypatch):
    a = make_node("A")
    b = make_node("B", a.addr)
    monkeypatch.setenv("MERGENET_NODE", b.addr)
    model_id = json.loads(cli("submit", model_copy("gpt2", 1), "--json", "--node", a.addr,
                              home_dir=a.home.root).out)["id"]
    wait_for(lambda: model_id in cli("ls", "--remote", "--json", home_dir=b.home.root).out)
    refused = cli("pull", model_id, "-o", tmp_path / "out", "--trusted-only", home_dir=b.home.root)
    assert refused.code == 3
    suggested = re.search(r"`mergenet (trust add [^`]+)`", refused.err).group(1).split()
    added = cli(*suggested, "--json", home_dir=b.home.root)
    assert added.code == 0, added.err
    assert json.loads(added.out)["key_id"] == a.network.self_ref.key_id
    assert cli("pull", model_id, "-o", tmp_path / "out", "--trusted-only", home_dir=b.home.root).code == 0
    assert cli("trust", "add", "0123abcd", home_dir=b.home.root).code == 2  # no such signer: exit 2


def test_example_models_make_something_to_try_and_a_base_kind(cli, tmp_path):
    out = tmp_path / "models"
    made = cli("example-models", out, "--arch", "gpt2", "--json")
    assert made.code == 0, made.err
    doc = json.loads(made.out)
    assert len(doc["experts"]) == 2 and all((out / p).is_dir() for p in ("base", "expert1", "expert2"))
    assert cli("example-models", out).code == 2  # not empty: refused, nothing overwritten
    base = json.loads(cli("submit", doc["base"], "--kind", "base", "--json", "--node", "127.0.0.1:9").out)
    expert = cli("submit", doc["experts"][0], "--base", doc["base"], "--json", "--node", "127.0.0.1:9")
    assert expert.code == 0, expert.err
    assert json.loads(expert.out)["manifest"]["base_model"] == base["id"]
    listed = {m["id"]: m["kind"] for m in json.loads(cli("ls", "--json").out)["models"]}
    assert listed == {base["id"]: "base", json.loads(expert.out)["id"]: "expert"}
    assert [m["id"] for m in json.loads(cli("ls", "--kind", "base", "--json").out)["models"]] == [base["id"]]

    # merge refuses an existing output folder before materializing any input
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels:\n  - model: {base['id']}\n    parameters: {{weight: 1.0}}\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("mine")
    refused = cli("merge", recipe, "-o", taken)
    assert refused.code == 2 and "materializ" not in refused.err and (taken / "x").read_text() == "mine"


def fake_hf_cache(root, repo_id: str, model_dir) -> str:
    """The Hub cache layout: blobs named by digest, a snapshot of symlinks into them, refs/main."""
    import hashlib

    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "c0ffee" + "0" * 34
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    files = {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    files["pytorch_model.bin"] = b"not to be opened"
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / rel).symlink_to(os.path.relpath(blob, snapshot))
    return commit


def cache_state(root) -> dict[str, tuple[bool, bytes]]:
    return {p.relative_to(root).as_posix(): (p.is_symlink(), p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_submit_by_name_from_the_hugging_face_cache_copies_and_never_writes_it(model_copy, tmp_path):
    from tests.node.netutil import run_cli

    cache, home = tmp_path / "hf-cache", tmp_path / "home"
    commit = fake_hf_cache(cache, "acme/tiny-expert", model_copy("llama", 1))
    before = cache_state(cache)
    env = {"HF_HUB_CACHE": str(cache), "MERGENET_NODE": "127.0.0.1:9"}
    res = run_cli("submit", "acme/tiny-expert", "--json", home=home, env=env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    copy = home / "hf" / f"acme--tiny-expert-{commit[:12]}"
    assert doc["manifest"]["name"] == "acme/tiny-expert" and (copy / "model.sig").is_file()
    assert not any(p.is_symlink() for p in copy.rglob("*")) and not (copy / "pytorch_model.bin").exists()
    assert "pytorch_model.bin" in res.stderr  # said what was left out
    assert cache_state(cache) == before  # the cache is only read
    assert run_cli("verify", doc["id"], home=home).returncode == 0

    missing = run_cli("submit", "acme/never-downloaded", home=home, env=env)
    assert missing.returncode == 2 and "download it first" in missing.stderr
