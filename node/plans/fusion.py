"""Heterogeneous (fusion) plans: what their recipe carries and how a verifier judges the result.

A fusion plan's recipe is a `merge.fusion` recipe (keys `target` + `sources`, models as ids) in
which the training data travels *by content*:

    {"target": "sha256:…", "sources": ["sha256:…", …], "top_k": 10, "epochs": 1, …,
     "data_b64": "<base64 of the JSONL bytes>", "data_sha256": "<hex>", "holdout": 0.25}

Why inline: the data is not a model, so it has no id the network could fetch by; carried inside
the plan it is covered by the proposer's signature and the plan id, every node has it as soon as
it has the plan, and nothing new has to be served. Base64 rather than text bounds the wire size
exactly (4/3, whatever the characters), which matters because a statement must fit one gRPC
message: the data is capped at `MAX_DATA_BYTES` (the statement limit is 1 MiB). `data_sha256`
names the bytes in the merged model's provenance, where the data itself is left out.

Held-out slice: a seeded share `holdout` of the JSONL lines (seed = the data's sha256, so every
node picks the same lines) is withheld from training; the executor trains on the rest.

Verification: a fusion cannot be recomputed cheaply, so a verifier *measures* instead. It
computes the response cross-entropy, in nats per response character (comparable across
tokenizers), of the merged model and of the original target on the held-out lines, and signs an
attestation carrying both scores. The rule (`verdict`): pass iff the merged model's loss is
finite and ≤ the target's loss + the plan's `verification.tolerance` (for fusion plans the
tolerance is in nats per character, `DEFAULT_LOSS_TOLERANCE` when proposed from the CLI).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.plans.errors import PlanInputError
from node.plans.model import PlanInput
from registry.ids import ModelId

MAX_DATA_BYTES = 384 * 1024  # ×16/9 after base64 twice (recipe, then DSSE envelope): < 1 MiB statement
DEFAULT_HOLDOUT = 0.25
DEFAULT_LOSS_TOLERANCE = 0.05  # nats per response character
INLINE_KEYS = ("data_b64", "data_sha256", "holdout")
UNBOUNDED = 1e30  # a non-finite loss as JSON can carry it (no inf/nan in canonical JSON)


def inline_recipe(settings: Mapping[str, Any], data: bytes, holdout: float = DEFAULT_HOLDOUT) -> dict[str, Any]:
    """The plan recipe: fusion settings (models as ids, no `data` path) plus the data by content."""
    if len(data) > MAX_DATA_BYTES:
        raise PlanInputError(f"fusion data of {len(data)} bytes exceeds the {MAX_DATA_BYTES}-byte limit of a plan; "
                             "use fewer or shorter examples")
    recipe = {k: v for k, v in settings.items() if k not in ("data", *INLINE_KEYS)}
    return {**recipe, "data_b64": base64.b64encode(data).decode("ascii"),
            "data_sha256": hashlib.sha256(data).hexdigest(), "holdout": float(holdout)}


def data_bytes(recipe: Mapping[str, Any]) -> bytes:
    """The plan's data, checked against its size cap and sha256 (PlanInputError naming the field)."""
    text = recipe.get("data_b64")
    if not isinstance(text, str):
        raise PlanInputError("fusion plan recipe: field 'data_b64' (the JSONL data, base64) is missing")
    if len(text) > 4 * (MAX_DATA_BYTES // 3 + 1):
        raise PlanInputError(f"fusion plan recipe: field 'data_b64' exceeds the {MAX_DATA_BYTES}-byte data limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PlanInputError("fusion plan recipe: field 'data_b64' is not valid base64") from None
    if hashlib.sha256(data).hexdigest() != recipe.get("data_sha256"):
        raise PlanInputError("fusion plan recipe: field 'data_sha256' does not match the data it carries")
    return data


def holdout_share(recipe: Mapping[str, Any]) -> float:
    share = recipe.get("holdout", DEFAULT_HOLDOUT)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share < 1.0:
        raise PlanInputError(f"fusion plan recipe: field 'holdout' must be a share in (0, 1), got {share!r}")
    return float(share)


def split_lines(data: bytes, share: float, seed: str) -> tuple[bytes, bytes]:
    """(train JSONL, held-out JSONL): a seeded ceil(share·n) of the non-blank lines are held out,
    at least one, and at least one is left to train on."""
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise PlanInputError("fusion plan data needs at least 2 examples: some to train on, some held out")
    n = min(len(lines) - 1, max(1, math.ceil(share * len(lines))))
    held = set(random.Random(hashlib.sha256(seed.encode()).digest()).sample(range(len(lines)), n))
    train = b"".join(lines[i] + b"\n" for i in range(len(lines)) if i not in held)
    return train, b"".join(lines[i] + b"\n" for i in sorted(held))


def settings(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The `merge.fusion` recipe keys of a plan recipe (without the inline data)."""
    return {k: v for k, v in recipe.items() if k not in INLINE_KEYS}


def provenance_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe as recorded in the merged model's provenance: all but the data bytes."""
    return {k: v for k, v in recipe.items() if k != "data_b64"}


def inputs_of(recipe: Mapping[str, Any]) -> list[PlanInput]:
    """Plan inputs: the target (`target`) then each source (`expert`), each once, all ids."""
    target, sources = recipe.get("target"), recipe.get("sources")
    if not isinstance(target, str) or not isinstance(sources, list) or not sources:
        raise PlanInputError("fusion plan recipe: 'target' must be a model id and 'sources' a non-empty list of ids")
    refs = list(dict.fromkeys([target, *sources]))
    for ref in refs:
        if not ModelId.valid(ref):
            raise PlanInputError(f"fusion recipe model {ref!r} is not a model id; "
                                 "submit it and use its sha256:<hex> id")
    return [PlanInput(ref, "target" if ref == target else "expert") for ref in refs]


def validate(recipe: Mapping[str, Any]) -> list[PlanInput]:
    """Check a fusion plan recipe as the proposer's node and every worker do; its inputs."""
    from merge.errors import MergeError
    from merge.fusion import load_recipe
    from merge.fusion.data import load_examples

    inputs = inputs_of(recipe)
    data = data_bytes(recipe)
    split_lines(data, holdout_share(recipe), recipe["data_sha256"])
    with tempfile.TemporaryDirectory(prefix="mergenet-fusion-") as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(data)
        try:
            load_recipe({**settings(recipe), "data": str(path)})
            load_examples(path)  # every line a complete example, else the error names the line
        except MergeError as exc:
            raise PlanInputError(f"fusion plan recipe: {exc}") from None
    return inputs


def finite(x: float) -> float:
    return float(x) if math.isfinite(x) else UNBOUNDED


def verdict(merged_loss: float, target_loss: float, tolerance: float) -> tuple[bool, str]:
    """Pass iff the merged model's held-out loss is finite and at most `tolerance` above the
    target's (an unmeasurable target loss cannot be beaten by much: any finite loss passes)."""
    if not math.isfinite(merged_loss) or merged_loss >= UNBOUNDED:
        return False, "the merged model's held-out loss is not finite"
    worse = merged_loss - target_loss
    if math.isfinite(target_loss) and target_loss < UNBOUNDED and worse > tolerance:
        return False, (f"the merged model's held-out loss {merged_loss:.4f} is worse than the target's "
                       f"{target_loss:.4f} by {worse:.4f} (tolerance {tolerance:g}) nats/char")
    return True, (f"held-out loss {merged_loss:.4f} vs target {target_loss:.4f} nats/char "
                  f"(tolerance {tolerance:g})")
