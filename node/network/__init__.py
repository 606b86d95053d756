"""How a node sees other nodes: gRPC client helpers, the peer table, DHT records and discovery,
and the view of remote models built from verified ads.

- `connect`, stubs, `rpc_error`, `operator_metadata` (the operator token as call metadata) → client.py
- `PeerTable` (known peers, misbehaviour memory, least-recently-seen eviction) → peers.py
- `LeaveChecks` (goodbyes honoured once the peer stops answering) → leaving.py
- DHT key names, timing constants, `NodeRecord` → dht_records.py (no hivemind import)
- `Discovery` (the node's side of the DHT child process; no hivemind import) → discovery.py
- the DHT child itself (`python -m node.network.dht_child`: hivemind, p2pd) → dht_child.py
- `Network` (gossip, announce rounds, remote ads, holders) → view.py
- what client commands ask the local node → remote.py
"""
