"""Model operations: the one layer between `merge/` (tensors and folders) and everything that
asks for a merge — the CLI commands and the plan jobs.

- `InputResolver` (recipe references → verified folders; ids through a fetch function, paths only
  when the caller is the local user) and `identify_inputs` (provenance inputs) → inputs.py
- `merge_and_submit`, `fuse_and_submit` (run the engine, then sign and register the result
  with one `registry.provenance.Provenance`) → producing.py
"""
