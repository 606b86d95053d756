"""The model card (README.md) written next to a merged model: Hub metadata, recipe and inputs.

    (out_dir / "README.md").write_text(model_card(recipe, inputs, license="MIT"))

The YAML front matter follows the Hugging Face Hub's conventions, so an uploaded folder shows
its parents in the Hub's model tree: `base_model` lists the inputs, `base_model_relation: merge`,
`tags` include `merge` and `mergenet`, `license` (the Hub's id for an SPDX id), `library_name`.
Inputs are named as the caller knows them: by the registry id it gives (`sha256:…`), else by
the reference the recipe used. The card records the exact recipe (YAML) and, per input, its id
or weight digests. The signed manifest remains the authoritative provenance; the card is for
people browsing a folder or a hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from merge.recipe import Recipe

HUB_TAGS = ("merge", "mergenet")
REGISTRY_ID_PREFIX = "sha256:"  # how the caller's ids look; anything else (weight digests) is not a name
UNKNOWN_LICENSE = "unknown"  # the Hub's value when no license is known (SPDX NOASSERTION or none given)
_SPDX_ID = re.compile(r"^[A-Za-z0-9.+-]+$")


def hub_license(spdx: str | None) -> dict[str, str]:
    """The Hub's license fields for an SPDX expression: one id in lower case (`Apache-2.0` →
    `apache-2.0`); a compound expression as `other` with the expression in `license_name`."""
    spdx = (spdx or "").strip()
    if not spdx or spdx.upper() == "NOASSERTION":
        return {"license": UNKNOWN_LICENSE}
    if _SPDX_ID.match(spdx):
        return {"license": spdx.lower()}
    return {"license": "other", "license_name": re.sub(r"[^a-z0-9.]+", "-", spdx.lower()).strip("-")}


def front_matter(base_models: Iterable[str], license: str | None, tags: Sequence[str] = ()) -> str:
    """The `---`-fenced YAML block the Hub reads from a README.md."""
    # str(): callers may pass str subclasses (registry ids), which safe_dump refuses to write
    doc: dict[str, Any] = {"base_model": list(dict.fromkeys(map(str, base_models))), "base_model_relation": "merge",
                           "tags": list(dict.fromkeys(map(str, [*HUB_TAGS, *tags]))), **hub_license(license),
                           "library_name": "transformers"}
    return "---\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True) + "---\n"


def input_name(ref: str, ident: str | None) -> str:
    """What `base_model` calls an input: the caller's registry id for it, else the reference as written."""
    return ident if ident and ident.startswith(REGISTRY_ID_PREFIX) else ref


def model_card(recipe: Recipe, inputs: Mapping[str, str] | None = None, *, device: str = "",
               version: str = "", license: str | None = None) -> str:
    """Markdown with Hub front matter. `inputs` maps each model reference to an id or digest."""
    inputs = dict(inputs or {})
    refs = recipe.model_refs()
    lines = [front_matter([input_name(ref, inputs.get(ref)) for ref in refs], license, [recipe.merge_method]),
             f"# {recipe.name or 'Merged model'}", "",
             f"Merged with mergenet{f' {version}' if version else ''} using **{recipe.merge_method}**"
             f"{f' on {device}' if device else ''}.", "", "## Inputs", ""]
    for ref in refs:
        role = " (base)" if ref == recipe.base_model else ""
        ident = inputs.get(ref)
        lines.append(f"- `{ref}`{role}" + (f": `{ident}`" if ident and ident != ref else ""))
    lines += ["", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
