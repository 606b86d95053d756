"""The recipe's tokenizer settings: `tokenizer_source` and mergekit's newer `tokenizer:` block.

    spec = parse_tokenizer({"source": "union", "tokens": {"<|im_start|>": {"source": "chatml"}}}, "recipe")
    spec = TokenizerSpec(source="base")       # what `tokenizer_source: base` means
    spec.model_refs(), spec.with_models(sub), spec.to_dict()

Validated at the edge like the rest of the recipe: every error names the field. The semantics
are mergekit 0.1.5's (`mergekit/tokenizer/config.py`): `source` is `union` (the default of the
block), `base` or a model; each entry of `tokens` says where that token's embedding row comes
from (a model that has the token, `{kind: model_token, model, token | token_id}` or
`{kind: zero}`) and whether it replaces every model's own row (`force`); tokens the output
vocabulary lacks are added to it; `pad_to_multiple_of` rounds the row count up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from merge.errors import RecipeError, check_keys

UNION, BASE = "union", "base"
BLOCK_KEYS = ("source", "tokens", "pad_to_multiple_of")
TOKEN_KEYS = ("source", "force")
MODEL_TOKEN, ZERO = "model_token", "zero"
SOURCE_KINDS = (MODEL_TOKEN, ZERO)


@dataclass(frozen=True)
class TokenSource:
    """Where one token's row comes from: `model`'s own row for the token (kind `model`), a row
    of `model` named by `token` or `token_id` (kind `model_token`), or zeros (kind `zero`)."""

    kind: str
    model: str | None = None
    token: str | None = None
    token_id: int | None = None

    def to_data(self) -> Any:
        if self.kind == "model":
            return self.model
        if self.kind == ZERO:
            return {"kind": ZERO}
        out: dict[str, Any] = {"kind": MODEL_TOKEN, "model": self.model}
        out.update({"token": self.token} if self.token is not None else {"token_id": self.token_id})
        return out


@dataclass(frozen=True)
class TokenSetting:
    source: TokenSource | None = None
    force: bool = False

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.source is not None:
            out["source"] = self.source.to_data()
        if self.force:
            out["force"] = True
        return out


@dataclass(frozen=True)
class TokenizerSpec:
    """How the output vocabulary is built and embedding rows aligned (None in a recipe: as is)."""

    source: str = UNION
    tokens: dict[str, TokenSetting] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None

    @property
    def source_model(self) -> str | None:
        return None if self.source in (UNION, BASE) else self.source

    def model_refs(self) -> list[str]:
        refs = [self.source_model] if self.source_model else []
        refs += [s.source.model for s in self.tokens.values() if s.source is not None and s.source.model]
        return list(dict.fromkeys(refs))

    def with_models(self, sub: Callable[[str], str]) -> TokenizerSpec:
        def swap(src: TokenSource | None) -> TokenSource | None:
            if src is None or src.model is None:
                return src
            return TokenSource(src.kind, sub(src.model), src.token, src.token_id)

        return TokenizerSpec(self.source if self.source in (UNION, BASE) else sub(self.source),
                             {tok: TokenSetting(swap(s.source), s.force) for tok, s in self.tokens.items()},
                             self.pad_to_multiple_of)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.tokens:
            out["tokens"] = {tok: s.to_data() for tok, s in self.tokens.items()}
        if self.pad_to_multiple_of is not None:
            out["pad_to_multiple_of"] = self.pad_to_multiple_of
        return out


def parse_source(value: Any, where: str, ref: Callable[[Any, str], str]) -> str:
    """`union`, `base` or a model reference (`ref` parses references as the recipe does)."""
    if value in (UNION, BASE):
        return value
    if value is None:
        raise RecipeError(f"{where} must be 'union', 'base' or a model reference")
    return ref(value, where)


def parse_tokenizer(value: Any, where: str, ref: Callable[[Any, str], str]) -> TokenizerSpec:
    """The `tokenizer:` block; `ref` parses a model reference (the recipe's own parser)."""
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where} must be a mapping with keys {', '.join(BLOCK_KEYS)}")
    check_keys(value, BLOCK_KEYS, where)
    source = parse_source(value.get("source", UNION), f"{where}.source", ref)
    tokens_in = value.get("tokens") or {}
    if not isinstance(tokens_in, Mapping):
        raise RecipeError(f"{where}.tokens must map token strings to {{source, force}} settings")
    tokens = {}
    for tok, setting in tokens_in.items():
        w = f"{where}.tokens[{tok!r}]"
        if not isinstance(tok, str) or not tok:
            raise RecipeError(f"{where}.tokens: token {tok!r} must be a non-empty string")
        tokens[tok] = _setting(setting or {}, w, ref)
    pad = value.get("pad_to_multiple_of")
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or pad < 1):
        raise RecipeError(f"{where}.pad_to_multiple_of must be a positive integer, got {pad!r}")
    return TokenizerSpec(source, tokens, pad)


def _setting(value: Any, where: str, ref: Callable[[Any, str], str]) -> TokenSetting:
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where} must be a mapping with keys {', '.join(TOKEN_KEYS)}")
    check_keys(value, TOKEN_KEYS, where)
    force = value.get("force", False)
    if not isinstance(force, bool):
        raise RecipeError(f"{where}.force must be true or false, got {force!r}")
    src = value.get("source")
    if src is None:
        return TokenSetting(None, force)
    if not (isinstance(src, Mapping) and "kind" in src):
        return TokenSetting(TokenSource("model", ref(src, f"{where}.source")), force)
    kind = src["kind"]
    w = f"{where}.source"
    if kind == ZERO:
        check_keys(src, ("kind",), w)
        return TokenSetting(TokenSource(ZERO), force)
    if kind != MODEL_TOKEN:
        raise RecipeError(f"{w}.kind must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    check_keys(src, ("kind", "model", "token", "token_id"), w)
    token, token_id = src.get("token"), src.get("token_id")
    if (token is None) == (token_id is None):
        raise RecipeError(f"{w} needs exactly one of 'token' or 'token_id'")
    if token is not None and not isinstance(token, str):
        raise RecipeError(f"{w}.token must be a string, got {token!r}")
    if token_id is not None and (not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0):
        raise RecipeError(f"{w}.token_id must be a non-negative integer, got {token_id!r}")
    return TokenSetting(TokenSource(MODEL_TOKEN, ref(src.get("model"), f"{w}.model"), token, token_id), force)
