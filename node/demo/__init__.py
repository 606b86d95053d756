"""`mergenet demo`: a real three-node network on loopback running the whole story.

- `LocalCluster` (node subprocesses that always die with the demo) → cluster.py
- `run_demo`, `DemoOptions` (generate, submit, propose, consent, merge, attest, pull) → story.py
"""
