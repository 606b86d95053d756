"""Address proofs: the node at an address shows it holds a key by signing a fresh nonce.

    reply = answer(identity, nonce)                          # the Plans.Prove handler
    ok = check(reply.public_key_pem, reply.signature, nonce, key_id)   # the proposer

A bid names an address; before a proposer commits a bidder it challenges that address, so a
stranger who bids with a live node's address (to pass liveness checks it cannot pass itself)
is left out. The signed bytes carry a context string, so a proof can never be replayed as a
statement or model signature.
"""

from __future__ import annotations

import secrets

from registry.errors import BadModelError
from registry.identity import key_id_of, verify_signature

PROVE_CONTEXT = b"mergenet/prove/v1\n"
MIN_NONCE, MAX_NONCE = 16, 64


def new_nonce() -> bytes:
    return secrets.token_bytes(32)


def answer(identity: object, nonce: bytes) -> tuple[str, bytes]:
    """(public key PEM, signature) for a nonce of acceptable length; ValueError otherwise."""
    if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise ValueError(f"nonce must be {MIN_NONCE} to {MAX_NONCE} bytes")
    return identity.public_pem.decode(), identity.sign(PROVE_CONTEXT + nonce)  # type: ignore[attr-defined]


def check(public_pem: str, signature: bytes, nonce: bytes, key_id: str) -> bool:
    """Whether the reply proves `key_id`: the key is that key and it signed this nonce."""
    try:
        if key_id_of(public_pem) != key_id:
            return False
    except BadModelError:
        return False
    return verify_signature(public_pem, PROVE_CONTEXT + nonce, signature)
