"""The on-disk layout of a mergenet home (`--home`, `$MERGENET_HOME`, `~/.mergenet`).

    home = Home(Path("~/.mergenet").expanduser()).ensure()
    home.key_path, home.store_dir, home.db_path  # where each piece lives

Everything lives under one root so that `tmp_dir` shares the store's filesystem and a blob
can be moved into place with an atomic rename.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    """Paths of one node's data directory; `ensure()` creates the folders."""

    root: Path

    @property
    def identity_dir(self) -> Path:
        return self.root / "identity"

    @property
    def key_path(self) -> Path:
        """Private key, PKCS#8 PEM, mode 0600."""
        return self.identity_dir / "private_key.pem"

    @property
    def public_key_path(self) -> Path:
        return self.identity_dir / "public_key.pem"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def db_path(self) -> Path:
        return self.root / "registry.db"

    @property
    def trust_path(self) -> Path:
        return self.root / "trusted_keys.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the store's filesystem, so finished files are renamed into place."""
        return self.root / "tmp"

    def ensure(self) -> Home:
        """Create the home's folders (the identity folder private to the user) and return self."""
        for path in (self.root, self.store_dir, self.logs_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.identity_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.identity_dir, 0o700)
        return self


def as_home(home: Home | Path | str) -> Home:
    """Accept a `Home` or a plain path wherever the registry needs a home."""
    return home if isinstance(home, Home) else Home(Path(home).expanduser().resolve())
