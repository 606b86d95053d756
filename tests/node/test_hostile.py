"""Hostile peers against a real in-process node (gRPC on 127.0.0.1, no DHT): bad digests, paths,
ids, oversized messages, forged advertisements and raw garbage are refused with the proper
status, and the node keeps serving everyone else."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket

import grpc
import pytest

from node.network.client import connect, registry_stub, transfer_stub
from protos import mergenet_pb2 as pb
from registry.services import convert
from registry.services.ads import SignedAd
from tests.node.netutil import submit_copy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node(families, tmp_path):
    from node.process.config import NodeConfig
    from node.process.daemon import Node

    model_id, folder = submit_copy(families["llama"][1][0], tmp_path / "home", tmp_path / "work")
    n = Node(NodeConfig(home=tmp_path / "home", listen="127.0.0.1:0", dht=False))
    n.start()
    n.model_id, n.folder = model_id, folder
    yield n
    n.stop()


@pytest.fixture
def foreign_ad(families, tmp_path) -> SignedAd:
    """A valid ad for a model held (and signed) by another home."""
    from registry.services.local_view import LocalView

    other = tmp_path / "other"
    model_id, _ = submit_copy(families["qwen2"][1][1], other, tmp_path / "work2")
    ad = LocalView.open(other).ad(model_id)
    assert ad is not None
    return ad


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def fetch(addr: str, digest: str, offset: int = 0) -> bytes:
    with connect(addr) as ch:
        return b"".join(c.data for c in transfer_stub(ch).Fetch(pb.FetchRequest(digest=digest, offset=offset),
                                                                 timeout=10))


def test_transfer_refuses_paths_bad_digests_unknown_blobs_and_bad_offsets(node):
    weights = (node.folder / "model.safetensors").read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    for bad in ("../../etc/passwd", "/etc/passwd", digest.upper(), digest[:63], "sha256:zz", "", digest + "/x"):
        assert code_of(lambda b=bad: fetch(node.addr, b)) == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert code_of(lambda: fetch(node.addr, "ab" * 32)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: fetch(node.addr, digest, len(weights) + 1)) == grpc.StatusCode.OUT_OF_RANGE
    # A well-formed request works, also from an offset, with or without the sha256: prefix.
    assert fetch(node.addr, digest) == weights
    assert fetch(node.addr, "sha256:" + digest, 1000) == weights[1000:]
    assert fetch(node.addr, digest, len(weights)) == b""


def test_registry_refuses_unknown_and_malformed_ids_and_oversized_messages(node):
    with connect(node.addr) as ch:
        stub = registry_stub(ch)
        unknown = pb.GetManifestRequest(model_id="sha256:" + "0" * 64)
        assert code_of(lambda: stub.GetManifest(unknown, timeout=5)) == grpc.StatusCode.NOT_FOUND
        for bad in ("", "sha256:../../x", "md5:" + "0" * 32, node.model_id[:-1]):
            req = pb.GetManifestRequest(model_id=bad)
            assert code_of(lambda r=req: stub.GetManifest(r, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
        huge = pb.AdvertiseRequest(models=[pb.ModelAd(model_id=node.model_id, manifest=os.urandom(3 << 20))])
        assert code_of(lambda: stub.Advertise(huge, timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        flood = pb.AnnounceRequest(known=[pb.PeerInfo(grpc_addr=f"127.0.0.1:{i + 1}") for i in range(1000)])
        assert code_of(lambda: stub.Announce(flood, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
        bad_kind = pb.ListRequest(kind="weird")
        assert code_of(lambda: stub.List(bad_kind, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
        # Our own model, served as signed.
        ad = stub.GetManifest(pb.GetManifestRequest(model_id=node.model_id), timeout=5)
        assert bytes(ad.manifest) == (node.folder / "mergenet.json").read_bytes()
        assert bytes(ad.signature) == (node.folder / "model.sig").read_bytes()


def test_forged_advertisements_are_dropped_and_valid_ones_listed(node, foreign_ad):
    sender = pb.PeerInfo(grpc_addr="127.0.0.1:1")
    manifest = json.loads(foreign_ad.manifest)
    renamed = dataclasses.replace(foreign_ad, manifest=json.dumps({**manifest, "name": "evil"}).encode())
    bundle = json.loads(foreign_ad.signature)
    sig = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = sig[:-6] + ("AAAAAA" if not sig.endswith("AAAAAA") else "BBBBBB")
    bad_sig = dataclasses.replace(foreign_ad, signature=json.dumps(bundle).encode())
    wrong_id = dataclasses.replace(foreign_ad, model_id="sha256:" + "1" * 64)
    garbage = SignedAd(model_id="sha256:" + "2" * 64, manifest=b"\x00\xff", signature=b"{not json")
    forged = [renamed, bad_sig, wrong_id, garbage]
    with connect(node.addr) as ch:
        stub = registry_stub(ch)
        reply = stub.Advertise(pb.AdvertiseRequest(sender=sender, models=[convert.ad_to_pb(a) for a in forged]),
                               timeout=10)
        assert (reply.accepted, reply.rejected) == (0, 4)
        listed = stub.List(pb.ListRequest(include_remote=True), timeout=10).models
        assert [m.model_id for m in listed] == [node.model_id]
        reply = stub.Advertise(pb.AdvertiseRequest(sender=sender, models=[convert.ad_to_pb(foreign_ad)]), timeout=10)
        assert (reply.accepted, reply.rejected) == (1, 0)
        rows = {m.model_id: m for m in stub.List(pb.ListRequest(include_remote=True), timeout=10).models}
    assert set(rows) == {node.model_id, foreign_ad.model_id}
    assert list(rows[foreign_ad.model_id].holders) == ["127.0.0.1:1"] and not rows[foreign_ad.model_id].local
    assert rows[node.model_id].local


def test_garbage_on_the_wire_does_not_stop_the_node(node):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    host, port = node.addr.rsplit(":", 1)
    for payload in (os.urandom(4096), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512), b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
    with connect(node.addr) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="mergenet.v1.Transfer"),
                                                      timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        models = registry_stub(ch).List(pb.ListRequest(), timeout=5).models
    assert [m.model_id for m in models] == [node.model_id]


def test_reflection_lists_the_mergenet_services(node):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with connect(node.addr) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5)
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"mergenet.v1.Registry", "mergenet.v1.Transfer", "grpc.health.v1.Health"} <= names
