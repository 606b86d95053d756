"""Jobs a node runs for plans: merges (execute) and recomputation spot checks (verify).

- `JobRunner` (daemon worker threads fed from a queue) → runner.py
- `JobContext` (home, key, address, device, fetch/announce models) → context.py
- fetching inputs from the local store or holders → inputs.py
- `execute_plan` (merge, sign, register with provenance) → execute.py
- `verify_plan`, `check_tensors` (seeded spot check within tolerance) → verify.py
- `NodeJobs` (the plan engine's jobs on a real node: bids, runner, attestation index) → node_jobs.py
"""
