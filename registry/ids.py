"""Content ids: the one place that knows what a `sha256:<64 hex>` id looks like.

    mid = ModelId.parse("sha256:9f…")     # BadIdError (exit 2) naming what was given
    ModelId.looks_like(ref)                # is this recipe reference an id (else a path)?
    mid.hex, mid.short                     # 64 hex digits; the first 16 for folder names

A `ModelId` is a `str` (so it goes into JSON, SQLite and protobuf unchanged) whose
construction validates it: code that holds one need not check it again. Plans are named the
same way (`PlanId`); blob digests are bare hex (`digest_hex`).
"""

from __future__ import annotations

import re

from registry.errors import BadIdError

PREFIX = "sha256:"
HEX_DIGITS = 64
SHORT_DIGITS = 16  # enough to be unique in any real store; used for scratch folder names
_HEX64 = re.compile(r"[0-9a-f]{64}")


def digest_hex(text: str) -> str | None:
    """`sha256:<hex>` or `<hex>` → the hex digest, None unless it is 64 lower-case hex digits."""
    hexpart = text.removeprefix(PREFIX) if isinstance(text, str) else ""
    return hexpart if _HEX64.fullmatch(hexpart) else None


class ModelId(str):
    """`sha256:<64 lower-case hex>`: the root digest over every file of a signed model folder."""

    what = "model id"

    def __new__(cls, text: str) -> ModelId:
        if not cls.valid(text):
            shown = text if isinstance(text, str) and len(text) <= 80 else f"{str(text)[:77]}..."
            raise BadIdError(f"{shown!r} is not a {cls.what} (expected sha256:<64 hex digits>)")
        return super().__new__(cls, text)

    @classmethod
    def parse(cls, text: object) -> ModelId:
        """Validate at the edge: `text` exactly as an id is written (no prefixes, no upper case)."""
        return text if type(text) is cls else cls(text)  # type: ignore[arg-type]

    @classmethod
    def valid(cls, text: object) -> bool:
        """Whether `text` is a well-formed id (for data from peers, which is dropped, not raised on)."""
        return isinstance(text, str) and text.startswith(PREFIX) and bool(_HEX64.fullmatch(text[len(PREFIX):]))

    @classmethod
    def looks_like(cls, ref: object) -> bool:
        """Whether a model reference is written as an id (and so is never opened as a path)."""
        return isinstance(ref, str) and ref.startswith(PREFIX)

    @property
    def hex(self) -> str:
        return self[len(PREFIX):]

    @property
    def short(self) -> str:
        return self[len(PREFIX):len(PREFIX) + SHORT_DIGITS]


class PlanId(ModelId):
    """`sha256:<hex>` of a plan's canonical JSON."""

    what = "plan id"
