"""Node settings from three layers: `HOME/config.toml` < environment variables < `node start` flags.

    settings = load_settings(home, flags={"listen": "127.0.0.1:7471"})
    settings.values["peers"], settings.sources["peers"]     # ("10.0.0.2:7470",), "file"
    settings.export_env()     # consent policy and limits, for the parts of the node that read env

`SPECS` is the one table of settings: its TOML key, its environment variable, its type, its
default and what it means; `mergenet node config` prints the resolved values and their source.
A config file with an unknown key or a wrongly typed value is refused, naming the file and key.

    # HOME/config.toml
    listen = "0.0.0.0:7470"
    advertise = "node1.example.org:7470"
    peers = ["10.0.0.2:7470"]
    consent_policy = "manual"
    trust = ["3742ce6a9f47881c…64 hex…", "keys/alice.pem"]
    metrics_port = 9470
    [limits]
    max_blob_bytes = 68719476736
    min_free_bytes = 1073741824
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import NodeInputError
from node.plans.service import CONSENT_POLICY_ENV
from node.process.config import split_list
from node.transfer.fetch import MAX_BLOB_BYTES, MAX_BLOB_ENV, MIN_FREE_BYTES, MIN_FREE_ENV

CONFIG_FILE = "config.toml"
CONSENT_POLICIES = ("accept", "reject", "manual")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value.strip()


def _items(value: Any) -> tuple[str, ...]:
    """A TOML list of strings, or a comma-separated string (environment variables, flags)."""
    if isinstance(value, str):
        return split_list(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise TypeError("a list of strings")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise TypeError(f"true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})")


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("a whole number")
    try:
        number = int(value)
    except ValueError:
        raise TypeError("a whole number") from None
    if number < 0:
        raise TypeError("a whole number >= 0")
    return number


def _endpoint(value: Any) -> str:
    """A port number or HOST:PORT (TOML may give the number as an integer); "" is off and port
    0 picks a free port (node.json then says which)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


def _policy(value: Any) -> str:
    text = _text(value).lower()
    if text not in CONSENT_POLICIES:
        raise TypeError(" or ".join(CONSENT_POLICIES))
    return text


@dataclass(frozen=True)
class Spec:
    """:param key: TOML key; `table.key` for a key inside a table (`limits.max_blob_bytes`)
    :param env: the environment variable that overrides the file
    :param parse: typed value from TOML or a string from env/flags; TypeError names what it wants
    :param default: the value when no layer sets it
    :param export: also export the resolved value as `env` (for parts of the node that read it)
    """

    key: str
    env: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    export: bool = False

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]


SPECS = (
    Spec("listen", "MERGENET_LISTEN", _text, "127.0.0.1:7470", "gRPC address HOST:PORT; port 0 picks one"),
    Spec("advertise", "MERGENET_ADVERTISE", _text, "", "HOST:PORT peers should dial (default: the listen address)"),
    Spec("peers", "MERGENET_PEERS", _items, (), "gRPC addresses of known nodes; their DHT is joined too"),
    Spec("dht", "MERGENET_DHT", _flag, True, "run a hivemind DHT peer for discovery"),
    Spec("initial_peers", "MERGENET_INITIAL_PEERS", _items, (), "DHT multiaddrs to join directly"),
    Spec("consent_policy", CONSENT_POLICY_ENV, _policy, "accept",
         "answer to plans that read this node's consent-policy models", export=True),
    Spec("trust", "MERGENET_TRUST", _items, (), "key ids or PEM files added to the trusted keys at start"),
    Spec("metrics_port", "MERGENET_METRICS_PORT", _endpoint, "",
         "[HOST:]PORT of the Prometheus endpoint (host default 127.0.0.1; off unless set)"),
    Spec("status_port", "MERGENET_STATUS_PORT", _endpoint, "",
         "[HOST:]PORT of the read-only status page (host default 127.0.0.1; off unless set)"),
    Spec("limits.max_blob_bytes", MAX_BLOB_ENV, _count, MAX_BLOB_BYTES,
         "largest blob a pull accepts", export=True),
    Spec("limits.min_free_bytes", MIN_FREE_ENV, _count, MIN_FREE_BYTES,
         "free disk a pull leaves on the store's filesystem", export=True),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings: `values[name]` and `sources[name]` (default, file, env or flag)."""

    path: Path
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def export_env(self, environ: dict[str, str] | None = None) -> None:
        """Put exported settings that came from the file or a flag into the environment."""
        environ = os.environ if environ is None else environ
        for spec in SPECS:
            if spec.export and self.sources[spec.name] in ("file", "flag"):
                environ[spec.env] = str(self.values[spec.name])

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "settings": {
            s.name: {"value": _plain(self.values[s.name]), "source": self.sources[s.name], "key": s.key,
                     "env": s.env, "help": s.help} for s in SPECS}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def read_file(path: Path) -> dict[str, Any]:
    """The config file's values by setting name; {} when there is none."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NodeInputError(f"cannot read {path}: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    known = {s.key: s for s in SPECS}
    out = {}
    for key, value in flat.items():
        spec = known.get(key)
        if spec is None:
            raise NodeInputError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[spec.name] = _parse(spec, value, f"{path}: {key}")
    return out


def _parse(spec: Spec, value: Any, where: str) -> Any:
    try:
        return spec.parse(value)
    except TypeError as exc:
        raise NodeInputError(f"{where} must be {exc}, not {value!r}") from None


def load_settings(home: Path, flags: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting: the file, then environment variables, then flags that were given
    (None means not given)."""
    environ = os.environ if environ is None else environ
    path = Path(home) / CONFIG_FILE
    values = {s.name: s.default for s in SPECS}
    sources = dict.fromkeys(values, "default")
    for name, value in read_file(path).items():
        values[name], sources[name] = value, "file"
    for spec in SPECS:
        raw = environ.get(spec.env, "")
        if raw.strip():
            values[spec.name], sources[spec.name] = _parse(spec, raw, f"${spec.env}"), "env"
    for name, value in (flags or {}).items():
        if value is not None:
            spec = SPEC_BY_NAME[name]
            values[name], sources[name] = _parse(spec, value, f"--{name.replace('_', '-')}"), "flag"
    return Settings(path, values, sources)
