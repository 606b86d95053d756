"""Identity keys and signed statements (consents, attestations, plan commits)."""

from __future__ import annotations

import copy
import json
import stat

import pytest

from registry.errors import VerificationError
from registry.identity import Identity, key_id_of, verify_signature
from registry.statements import ATTESTATION_V1, CONSENT_V1, PLAN_V1, sign_statement, verify_statement

MODEL = "sha256:" + "ab" * 32


def test_keygen_is_idempotent_and_private(cli, home):
    first = cli("keygen", "--json")
    second = cli("keygen", "--json")
    assert first.code == 0 and second.code == 0
    a, b = json.loads(first.out), json.loads(second.out)
    assert a["created"] is True and b["created"] is False and a["key_id"] == b["key_id"]
    mode = stat.S_IMODE((home / "identity" / "private_key.pem").stat().st_mode)
    assert mode == 0o600


def test_id_prints_key_id_and_pem(cli, home):
    cli("keygen")
    pem = cli("id", "--pem").out
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert json.loads(cli("id", "--json").out)["key_id"] == key_id_of(pem)
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((home / "identity" / "private_key.pem").read_bytes(), None)
    assert key.curve.name == "secp256r1"


def test_id_without_key_is_operational_error(cli):
    res = cli("id")
    assert res.code == 1 and "keygen" in res.err


def test_signatures_verify_only_with_the_right_key_and_data(home, tmp_path):
    ident, created = Identity.load_or_create(home)
    assert created and Identity.load(home).key_id == ident.key_id
    other = Identity.generate()
    sig = ident.sign(b"data")
    assert verify_signature(ident.public_pem, b"data", sig)
    assert not verify_signature(ident.public_pem, b"datA", sig)
    assert not verify_signature(other.public_pem, b"data", sig)


@pytest.mark.parametrize("ptype", [CONSENT_V1, ATTESTATION_V1, PLAN_V1])
def test_statement_round_trip(ptype):
    ident = Identity.generate()
    bundle = sign_statement(ident, MODEL, MODEL, ptype, {"accept": True, "plan": "p1"})
    vs = verify_statement(json.loads(json.dumps(bundle)), expected_key_id=ident.key_id, predicate_type=ptype)
    assert vs.key_id == ident.key_id and vs.predicate == {"accept": True, "plan": "p1"}
    assert vs.subject_digest == "ab" * 32 and vs.predicate_type == ptype


def test_statement_tampering_and_key_swaps_are_caught():
    ident, mallory = Identity.generate(), Identity.generate()
    bundle = sign_statement(ident, MODEL, MODEL, CONSENT_V1, {"accept": False})

    with pytest.raises(VerificationError, match=ident.key_id):
        verify_statement(bundle, expected_key_id=mallory.key_id)
    with pytest.raises(VerificationError, match="predicate type"):
        verify_statement(bundle, predicate_type=ATTESTATION_V1)

    import base64

    forged = copy.deepcopy(bundle)
    payload = json.loads(base64.b64decode(forged["dsseEnvelope"]["payload"]))
    payload["predicate"]["accept"] = True
    forged["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(VerificationError, match="signature"):
        verify_statement(forged)

    swapped = copy.deepcopy(bundle)  # carry mallory's key: the hint no longer matches
    swapped["publicKeyPem"] = mallory.public_pem.decode()
    with pytest.raises(VerificationError):
        verify_statement(swapped)

    resigned = sign_statement(mallory, MODEL, MODEL, CONSENT_V1, {"accept": True})
    assert verify_statement(resigned).key_id == mallory.key_id  # valid, but by mallory
    with pytest.raises(VerificationError):
        verify_statement({k: v for k, v in bundle.items() if k != "publicKeyPem"})
