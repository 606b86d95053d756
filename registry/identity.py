"""A node's identity: one ECDSA P-256 key pair (the curve OpenSSF `model-signing` accepts).

    ident, created = Identity.load_or_create(home)
    sig = ident.sign(data); verify_signature(ident.public_pem, data, sig)

The key id is the hex sha256 of the public key's SubjectPublicKeyInfo PEM — the same value
model-signing puts in a bundle's `verificationMaterial.publicKey.hint`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import BadModelError, RegistryError
from registry.home import Home, as_home

KEY_ID_HEX_LEN = 64
MIN_KEY_ID_PREFIX = 8  # shorter prefixes match too many keys to be a useful name


def key_id_of(public_pem: bytes | str) -> str:
    """Hex sha256 of the public key re-encoded as SubjectPublicKeyInfo PEM (the bundle hint)."""
    return hashlib.sha256(canonical_public_pem(public_pem)).hexdigest()


def canonical_public_pem(public_pem: bytes | str) -> bytes:
    """Re-encode a PEM public key exactly as `cryptography` writes it, so ids do not depend on
    line endings or headers a user's tool chose; raises BadModelError for a non-P-256 key."""
    raw = public_pem.encode() if isinstance(public_pem, str) else public_pem
    try:
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise BadModelError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise BadModelError("public key is not ECDSA P-256; mergenet identities are P-256 keys")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_signature(public_pem: bytes | str, data: bytes, sig: bytes) -> bool:
    """True when `sig` (DER ECDSA) is a P-256/SHA-256 signature over `data` by that key."""
    try:
        key = serialization.load_pem_public_key(canonical_public_pem(public_pem))
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    except (InvalidSignature, BadModelError, ValueError, TypeError):
        return False
    return True


def matches_key_id(actual: str, wanted: str) -> bool:
    """`wanted` names `actual`: the full hex id or a unique-enough prefix of it."""
    wanted = wanted.strip().lower()
    return len(wanted) >= MIN_KEY_ID_PREFIX and actual.lower().startswith(wanted)


@dataclass(frozen=True)
class Identity:
    """A loaded key pair; the private key never leaves this object."""

    private_key: ec.EllipticCurvePrivateKey
    public_pem: bytes
    key_id: str

    @classmethod
    def _from_private(cls, key: ec.EllipticCurvePrivateKey) -> Identity:
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(private_key=key, public_pem=pem, key_id=hashlib.sha256(pem).hexdigest())

    @classmethod
    def generate(cls) -> Identity:
        return cls._from_private(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load(cls, home: Home | Path) -> Identity:
        """Load the home's key; RegistryError when there is none yet (run `mergenet keygen`)."""
        path = as_home(home).key_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"no identity key at {path}; run `mergenet keygen` first") from None
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"{path} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise RegistryError(f"{path} is not an ECDSA P-256 key")
        return cls._from_private(key)

    @classmethod
    def load_or_create(cls, home: Home | Path) -> tuple[Identity, bool]:
        """The home's identity, creating it (private key 0600) when absent; (identity, created)."""
        home = as_home(home).ensure()
        if home.key_path.exists():
            return cls.load(home), False
        ident = cls.generate()
        if not ident.save(home):  # another process created one first: use theirs
            return cls.load(home), False
        return ident, True

    def save(self, home: Home) -> bool:
        """Write the key pair unless a key exists; the private key is 0600 before any byte is
        written and appears complete or not at all (hard link of a finished temp file)."""
        private = self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())
        tmp = home.key_path.with_name(f".{home.key_path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(private)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, home.key_path)  # unlike rename, never replaces a key someone else just made
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        pub_tmp = home.public_key_path.with_name(f".{home.public_key_path.name}.{os.getpid()}.tmp")
        pub_tmp.write_bytes(self.public_pem)
        os.replace(pub_tmp, home.public_key_path)
        return True

    def sign(self, data: bytes) -> bytes:
        """DER-encoded ECDSA P-256 / SHA-256 signature over `data`."""
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))
