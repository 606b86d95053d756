"""merge — what a merge DOES: pure compute over tensors (no network, keys or database).

Pipeline: recipe → tensor plan → method → executor → writer; plus search, fusion and eval.

Homogeneous merge engine (modules and public API):

- `recipe.py`   `load_recipe(source: Path | str | dict) -> Recipe`; `Recipe.to_dict()`, `.to_yaml()`,
                `.model_refs() -> list[str]`, `.with_models(mapping) -> Recipe` (the CLI swaps
                `sha256:` ids for local folders; merge/ itself only knows paths).
- `params.py`   `setting_value(setting, tensor_name, t)`, `lookup(name, scopes, tensor_name, t)`:
                scalars, per-layer gradients and `{filter, value}` lists as mergekit 0.1.5.
- `methods/`    `METHODS: dict[str, MergeMethod]`; `MergeMethod(name, fn, params, needs_base,
                randomized, reference, min_inputs, max_inputs)` with
                `fn(tensors, base, params: list[dict], global_params: dict, generator) -> Tensor`.
- `io.py`       `ModelReader(folder)`: `.names()`, `.info(name)`, `.get(name, device, dtype)`.
- `lora.py`     `open_reader("model+adapter")`: a reader with a PEFT LoRA adapter applied.
- `tokenizer/`  the output vocabulary (`tokenizer_source`, `tokenizer:`), embedding rows aligned
                by token, chat templates (`chat_templates.py` holds mergekit's named ones).
- `plan.py`     `plan_merge(recipe) -> MergePlan` with `.tasks: list[TensorTask]` (output name,
                input/base `Source(model, tensor)`, resolved per-model and global params, layer, t).
- `executor.py` `merge_tensor(task, inputs, base, *, method, device, generator)` (float32);
                `compute_tensors(recipe, names, device="cpu") -> dict[str, Tensor]`;
                `run_merge(recipe, out_dir, *, device="auto", out_dtype=None, shard_size=...,
                progress=None, inputs=None) -> MergeResult(out_dir, n_tensors, bytes_written,
                seconds, device)`; `tensor_generator(seed, name, device)`.
- `outputs.py`  `expected_folder(recipe, …) -> FolderSpec`: every non-tensor file's bytes and
                the shard layout `run_merge` writes (what verifiers compare), `config_files`.
- `writer.py`   `ShardedWriter`: sharded safetensors written as tensors are computed;
                `ShardLayout` (shard files, headers, index) from the layout alone.
- `card.py`     `model_card(recipe, inputs)`: README.md with the recipe and input ids.

mergenet computes in float32 always and writes `out_dtype` (else `dtype`); with `dtype: float32`
results equal mergekit 0.1.5's for the deterministic methods.
"""
