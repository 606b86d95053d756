"""The node process: configuration, the gRPC server and the services it serves, start and stop.

- `NodeConfig`, address parsing → config.py
- `NodeServer` (bind first, then services + health + reflection), `ServiceSpec` → server.py
- the services a node serves → services.py
- the operator token and `OperatorGate`, the interceptor that keeps `OPERATOR_METHODS` to the
  node's operator → auth.py
- `Node` (binds, builds, starts and stops everything; `node.json`) → daemon.py
- Prometheus metrics (event counters, state gauges, the /metrics server) → metrics.py; the gRPC
  interceptor feeding them → rpc_metrics.py
- the status page → status_page.py, drawn from `node_state` → status_state.py
- the container health probe (`python -m node.process.healthcheck`) → healthcheck.py
"""
