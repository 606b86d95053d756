"""registry.services — the Registry and Transfer gRPC servicers; protobuf stops here.

    ads.py            SignedAd / verify_ad: a peer's model advertisement and its check
    local_view.py     LocalView: what this node's registry offers (ids, summaries, ads, blobs)
    hooks.py          NetworkHooks: what the node supplies (peers, DHT, remote models)
    registry_service  RegistryServicer (Advertise, List, GetManifest, Announce, GetNetworkInfo, ...)
    transfer_service  TransferServicer (Fetch: stream a blob by sha256 from an offset)
    convert.py        protobuf ⇄ domain types
    limits.py         StreamSlots: Transfer streams capped in total and per client, send timeout
    rate.py           RateLimiter: per-client-host token buckets for gossip
"""
