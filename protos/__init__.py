"""protos — the wire types: mergenet.proto and its generated code."""
