"""protos — the wire types: mergenet.proto (source of truth) and its generated code.

`mergenet_pb2` holds the messages, `mergenet_pb2_grpc` the Registry and Transfer stubs and
servicers. Regenerate both with `scripts/gen_protos.sh`; a test fails when they are stale.
Only the service layers (`registry/services/`, `node/`) import these modules.
"""
