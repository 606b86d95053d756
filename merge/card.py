"""The model card (README.md) written next to a merged model: recipe and inputs, for humans.

    (out_dir / "README.md").write_text(model_card(recipe, inputs))

Records the exact recipe (YAML) and, per input, the reference the recipe used plus its
registry id or weight digest when the caller knows it. The signed manifest remains the
authoritative provenance; the card is for people browsing a folder or a hub.
"""

from __future__ import annotations

from collections.abc import Mapping

from merge.recipe import Recipe


def model_card(recipe: Recipe, inputs: Mapping[str, str] | None = None, *, device: str = "",
               version: str = "") -> str:
    """Markdown with YAML front matter. `inputs` maps each model reference to an id or digest."""
    inputs = dict(inputs or {})
    refs = recipe.model_refs()
    lines = ["---", "library_name: transformers", "tags:", "- merge", "- mergenet", f"- {recipe.merge_method}"]
    if recipe.base_model:
        lines.append(f"base_model: {inputs.get(recipe.base_model, recipe.base_model)}")
    lines += ["---", "", f"# {recipe.name or 'Merged model'}", "",
              f"Merged with mergenet{f' {version}' if version else ''} using **{recipe.merge_method}**"
              f"{f' on {device}' if device else ''}.", "", "## Inputs", ""]
    for ref in refs:
        role = " (base)" if ref == recipe.base_model else ""
        ident = inputs.get(ref)
        lines.append(f"- `{ref}`{role}" + (f": `{ident}`" if ident and ident != ref else ""))
    lines += ["", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
