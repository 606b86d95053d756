"""Merge plans: propose → consent → bid → commit → execute → verify → publish.

- `Plan`, `Consent`, `Bid`, `Commit`, `Result`, `Attestation` → model.py (frozen, canonical JSON)
- policy, licenses, executor/verifier choice, spot-check sampling → rules.py
- the state machine and its persistence under the home → state.py
- signing and verifying statements (DSSE via registry.statements) → signing.py
- the protocol every node runs over signed statements → engine.py
- the proposer's address-proven commit (challenges run concurrently) → choosing.py
- the gRPC Plans servicer and gossip transport → service.py
"""
