"""mergenet's version: one lookup, from the installed distribution's metadata.

    from registry.version import MERGENET_VERSION   # "0.1.0"; "0+source" in a bare checkout

Manifests, provenance, model cards, DHT records and `mergenet --version` all print this value;
`merge/` is handed it as an argument, so the engine stays free of packaging concerns.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "mergenet"
UNINSTALLED = "0+source"  # a checkout run without `pip install -e .`: PEP 440 local, sorts first


def _lookup() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNINSTALLED


MERGENET_VERSION = _lookup()
