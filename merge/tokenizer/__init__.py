"""merge.tokenizer — the output vocabulary of a merge and embedding rows aligned to it.

- `config.py`  `TokenizerSpec`, `parse_tokenizer`: the recipe's `tokenizer_source` / `tokenizer:`.
- `vocab.py`   `load_vocab(folder) -> ModelVocab`: one input's tokens, added tokens, embedding rows.
- `build.py`   `build_vocab(spec, base, vocabs) -> OutputVocab`: union / base / a model's vocabulary.
- `embed.py`   `plan_alignment(...) -> VocabAlignment`, `align_task`: rows re-indexed by token, filled in.
- `chat.py`    `resolve_template(setting, folders)`: `auto`, a named template, or Jinja text.
- `files.py`   `tokenizer_files(folder, vocab, template)`: the tokenizer files the output gets.

Semantics are mergekit 0.1.5's (`mergekit/tokenizer/`), made deterministic where mergekit's
depend on hash order. Import the modules themselves: the recipe parser needs `config.py`
without the torch that `embed.py` brings.
"""
