"""Jobs a node runs for plans: execute a plan (merge or fusion) and verify another node's result.

- `JobRunner` (daemon worker threads fed from a queue) → runner.py
- `JobContext` (home, key, address, device, fetch/announce models) → context.py
- fetching inputs from the local store or holders → inputs.py
- signer, provenance and manifest checks every verifier makes first → results.py
- the manifest claims of a plan's output, for executor and verifiers alike → claims.py
- the whole-folder rule (exactly the files the recipe writes, byte for byte) → folder.py
- `execute_merge`, `verify_merge` (whole folder, then a freshly drawn share of tensors) → merge_jobs.py
- `execute_fusion`, `verify_fusion` (whole folder, then held-out loss) → fusion_jobs.py
- `NodeJobs`, `execute_plan`, `verify_plan` (the one dispatch on plan kind; bids, runner,
  attestation index for the plan engine) → node_jobs.py
"""
