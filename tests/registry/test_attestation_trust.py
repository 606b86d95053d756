"""Attestations are opinions: `pull --require-attestations N` and `show` count only keys the
puller trusts, and say how many others (possibly Sybils) exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.plans.model import Attestation
from node.plans.signing import sign
from node.transfer.pull import pull
from registry.attestations import count_attestations
from registry.errors import VerificationError
from registry.identity import Identity
from registry.local import LocalRegistry

REPO = Path(__file__).resolve().parents[2]
PLAN = "sha256:" + "1" * 64


def attest(key: Identity, model_id: str, passed: bool = True) -> dict:
    return sign(key, Attestation(PLAN, model_id, ("w",), 0.0, passed, "" if passed else "differs"))


@pytest.fixture
def held(model_copy, tmp_path):
    reg = LocalRegistry(tmp_path / "home")
    model_id = reg.submit(model_copy("gpt2", 1), license="MIT").id
    friends = [Identity.generate() for _ in range(2)]
    sybils = [Identity.generate() for _ in range(10)]
    for key in [*friends, *sybils]:
        reg.add_attestation(model_id, attest(key, model_id))
    reg.close()
    return tmp_path / "home", model_id, friends, sybils


def test_only_trusted_keys_count(held):
    home, model_id, friends, sybils = held
    reg = LocalRegistry(home)
    try:
        tally = reg.attestation_tally(model_id)
        assert tally.trusted == () and tally.others == 12
        reg.trust.add(friends[0].key_id)
        tally = reg.attestation_tally(model_id)
        assert tally.trusted == (friends[0].key_id,) and tally.others == 11
        # A FAIL from a key cancels its PASS; a bundle about another model or one that does not verify counts nothing.
        bad = attest(friends[0], model_id, passed=False)
        other = attest(friends[1], "sha256:" + "2" * 64)
        broken = json.loads(json.dumps(attest(friends[1], model_id)))
        broken["dsseEnvelope"]["signatures"][0]["sig"] = "AAAA"
        tally = reg.attestation_tally(model_id, [bad, other, broken])
        assert tally.trusted == () and tally.failed == (friends[0].key_id,) and tally.others == 11
    finally:
        reg.close()
    assert count_attestations([attest(sybils[0], model_id)] * 5, model_id, lambda _k: False).others == 1


def test_pull_requires_attestations_from_trusted_keys(held, tmp_path):
    home, model_id, friends, _ = held
    with pytest.raises(VerificationError, match=r"0 PASS attestation.*12 from others.*trust add"):
        pull(model_id, home, tmp_path / "out1", require_attestations=1)
    assert not (tmp_path / "out1").exists()
    reg = LocalRegistry(home)
    for key in friends:
        reg.trust.add(key.key_id)
    reg.close()
    assert pull(model_id, home, tmp_path / "out2", require_attestations=2).path.is_dir()
    with pytest.raises(VerificationError, match="needs 3"):
        pull(model_id, home, tmp_path / "out3", require_attestations=3)


def test_cli_show_and_pull_count_by_trust(held, tmp_path):
    home, model_id, friends, _ = held

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "node.cli.main", *args, "--home", str(home)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    shown = cli("show", model_id, "--json")
    assert shown.returncode == 0, shown.stderr
    counts = json.loads(shown.stdout)["attestation_counts"]
    assert counts == {"trusted": [], "others": 12, "failed": []}
    assert "0 PASS from keys you trust, 12 from other keys" in cli("show", model_id).stdout
    refused = cli("pull", model_id, "-o", str(tmp_path / "o"), "--require-attestations", "1")
    assert refused.returncode == 3 and "trust add" in refused.stderr and refused.stderr.count("\n") == 1
    assert cli("trust", "add", friends[0].key_id).returncode == 0
    ok = cli("pull", model_id, "-o", str(tmp_path / "o"), "--require-attestations", "1")
    assert ok.returncode == 0, ok.stderr
