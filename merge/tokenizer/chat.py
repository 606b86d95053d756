"""Which chat template a recipe's `chat_template` means (mergekit 0.1.5's `_set_chat_template`).

    text = resolve_template("auto", [Path("/m/a"), Path("/m/b")])   # the inputs' most common one
    text = resolve_template("chatml", [])                           # a named template's Jinja
    text = model_template(Path("/m/a"))                             # what a folder's tokenizer uses

`auto` picks the template most inputs use (stripped; a tie goes to the first in recipe order;
None when no input has one); a name is one of `merge.chat_templates.NAMED_TEMPLATES`; anything
else is the Jinja template itself (the recipe parser checked it looks like one).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from merge.chat_templates import NAMED_TEMPLATES
from merge.errors import MergeInputError

AUTO = "auto"
JINJA_FILE = "chat_template.jinja"  # where transformers ≥ 4.49 saves a tokenizer's template
DEFAULT_NAME = "default"  # the template transformers uses among several named ones


def model_template(folder: Path) -> str | None:
    """The chat template of the tokenizer in `folder` (its .jinja file, else tokenizer_config.json)."""
    jinja = folder / JINJA_FILE
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        doc = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"cannot read {folder / 'tokenizer_config.json'}: {exc}") from exc
    template = doc.get("chat_template") if isinstance(doc, dict) else None
    if isinstance(template, list):  # several named templates: [{"name": ..., "template": ...}]
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == DEFAULT_NAME),
                        None)
    return template if isinstance(template, str) and template else None


def resolve_template(setting: str | None, folders: Iterable[Path]) -> str | None:
    """The Jinja text `setting` selects; `folders` are the input models in recipe order."""
    if setting is None:
        return None
    if setting == AUTO:
        found = [t.strip() for f in folders if (t := model_template(f))]
        return Counter(found).most_common(1)[0][0] if found else None
    return NAMED_TEMPLATES.get(setting, setting)
