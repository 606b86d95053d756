"""Pulls against holders that lie about sizes or serve garbled ads: real gRPC servers on
127.0.0.1 serving a genuinely signed tiny model. The file sizes in an ad are unsigned, so a
stream may not be bounded (or blamed) by them; the per-blob cap and the disk reserve are."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from safetensors.numpy import save_file

from node.network.peers import PeerTable
from node.transfer.fetch import DiskSpaceError, free_bytes
from node.transfer.pull import pull_from_network
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.dsse import IN_TOTO_PAYLOAD_TYPE, sign_bundle
from registry.local import LocalRegistry
from registry.manifest import Manifest
from registry.services.ads import SignedAd
from registry.services.local_view import LocalView
from registry.services.registry_service import RegistryServicer
from registry.services.transfer_service import TransferServicer
from tests.node.netutil import folder_bytes, run_cli

pytestmark = pytest.mark.timeout(60)

CAP = 3 << 20  # test cap per blob: the model's blobs are a few KiB, the endless holder passes it fast


@dataclasses.dataclass
class Published:
    model_id: str
    folder: Path
    ad: SignedAd
    blob_path: Callable[[str], Path | None]
    sign: Callable[[bytes], bytes]  # a model.sig over any payload, by the publisher's own key


def _publish(root: Path, signed_sizes: bool) -> Published:
    folder = root / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4}))
    save_file({"w": np.arange(64 * 64, dtype=np.float32).reshape(64, 64)}, str(folder / "model.safetensors"))
    reg = LocalRegistry(root / "home")
    try:
        with pytest.MonkeyPatch.context() as mp:
            if not signed_sizes:  # a manifest from before sizes were signed: only the caps protect the puller
                to_dict = Manifest.to_dict
                mp.setattr(Manifest, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if k != "sizes"})
            model_id = reg.submit(folder).id
        identity = reg.identity()
    finally:
        reg.close()

    def sign(payload: bytes) -> bytes:
        return json.dumps(sign_bundle(identity, IN_TOTO_PAYLOAD_TYPE, payload), separators=(",", ":")).encode()

    view = LocalView.open(root / "home")
    ad = view.ad(model_id)
    assert ad is not None and len(ad.files) >= 2
    return Published(model_id, folder, ad, view.blob_path, sign)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[Published]:
    yield _publish(tmp_path_factory.mktemp("hostile-sizes"), signed_sizes=False)


@pytest.fixture(scope="module")
def published_sized(tmp_path_factory) -> Iterator[Published]:
    yield _publish(tmp_path_factory.mktemp("hostile-signed-sizes"), signed_sizes=True)


class _View:
    """Answers GetManifest with one fixed (possibly forged) ad."""

    def __init__(self, ad: SignedAd) -> None:
        self._ad = ad

    def ad(self, model_id: str) -> SignedAd | None:
        return self._ad if model_id == self._ad.model_id else None

    def ids(self) -> list[str]:
        return [self._ad.model_id]

    def summaries(self, kind: str | None = None) -> list:
        return []


class _Endless(pb_grpc.TransferServicer):
    """Streams zeros forever at the requested offset, claiming no total size."""

    def __init__(self) -> None:
        self.sent = 0

    def Fetch(self, request: pb.FetchRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        offset = request.offset
        while context.is_active():
            yield pb.Chunk(offset=offset, data=b"\0" * (1 << 20), total_size=0)
            offset += 1 << 20
            self.sent += 1 << 20


@pytest.fixture
def serve():
    servers: list[grpc.Server] = []

    def start(ad: SignedAd, transfer: pb_grpc.TransferServicer) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_RegistryServicer_to_server(RegistryServicer(_View(ad), None), server)
        pb_grpc.add_TransferServicer_to_server(transfer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0).wait(5)


def with_sizes(ad: SignedAd, size: int) -> SignedAd:
    return dataclasses.replace(ad, files=tuple((rel, digest, size) for rel, digest, _ in ad.files))


def pull(tmp_path: Path, pub: Published, holders: list[str], peers: PeerTable, **limits):
    registry = LocalRegistry(tmp_path / "P")
    try:
        return pull_from_network(registry, pub.model_id, tmp_path / "out", holders, peers=peers, **limits)
    finally:
        registry.close()


def partials(home: Path) -> list[Path]:
    return list((home / "store" / "partial").glob("*.incomplete"))


def bad_reason(peers: PeerTable, addr: str) -> str:
    return next(p.bad_reason for p in peers.all() if p.addr == addr)


def test_endless_stream_is_cut_at_the_cap_and_the_pull_completes_from_an_honest_holder(published, serve, tmp_path):
    endless = _Endless()
    flood = serve(with_sizes(published.ad, 0), endless)
    honest = serve(published.ad, TransferServicer(published.blob_path))
    peers = PeerTable()
    result = pull(tmp_path, published, [flood, honest], peers, max_blob_bytes=CAP)
    assert result.sources == (honest,)
    assert peers.is_bad(flood) and "cap" in bad_reason(peers, flood)
    assert not peers.is_bad(honest)
    assert endless.sent >= CAP  # it really streamed up to the cap before being cut off
    assert partials(tmp_path / "P") == []  # its zeros were deleted, not kept for resume
    assert folder_bytes(result.path) == folder_bytes(published.folder)


def test_signed_sizes_cut_an_endless_stream_at_the_first_extra_byte(published_sized, serve, tmp_path):
    """Sizes in the signed manifest are exact, whatever the ad or the holder claim."""
    endless = _Endless()
    flood = serve(with_sizes(published_sized.ad, 0), endless)
    honest = serve(published_sized.ad, TransferServicer(published_sized.blob_path))
    peers = PeerTable()
    result = pull(tmp_path, published_sized, [flood, honest], peers, max_blob_bytes=CAP)
    assert result.sources == (honest,)
    assert peers.is_bad(flood) and not peers.is_bad(honest)
    # Cut at the blob's signed size, long before the cap or the disk reserve could come into play.
    reason = bad_reason(peers, flood)
    assert "cap" not in reason and "disk" not in reason and "bytes blob" in reason, reason
    assert partials(tmp_path / "P") == []
    assert folder_bytes(result.path) == folder_bytes(published_sized.folder)


def test_endless_stream_is_cut_when_the_disk_reserve_is_reached(published, serve, tmp_path):
    """No cap in play (the default 64 GiB): the reserve stops a stream no size statement covers."""
    flood = serve(with_sizes(published.ad, 0), _Endless())
    honest = serve(published.ad, TransferServicer(published.blob_path))
    (tmp_path / "P").mkdir()
    peers = PeerTable()
    # Leave ~48 MiB of room above the reserve: the flood must stop there, the honest KiBs fit.
    result = pull(tmp_path, published, [flood, honest], peers, min_free_bytes=free_bytes(tmp_path) - (48 << 20))
    assert result.sources == (honest,)
    assert peers.is_bad(flood) and "disk" in bad_reason(peers, flood)
    assert partials(tmp_path / "P") == []


def test_full_disk_stops_the_pull_without_blaming_the_holder(published, serve, tmp_path):
    honest = serve(published.ad, TransferServicer(published.blob_path))
    peers = PeerTable()
    with pytest.raises(DiskSpaceError, match="free"):
        pull(tmp_path, published, [honest], peers, min_free_bytes=1 << 60)
    assert not peers.is_bad(honest) and not (tmp_path / "out").exists()


def test_cli_pull_past_an_endless_holder_keeps_stderr_quiet(published, serve, tmp_path):
    flood = serve(with_sizes(published.ad, 0), _Endless())
    honest = serve(published.ad, TransferServicer(published.blob_path))
    res = run_cli("pull", published.model_id, "-o", str(tmp_path / "out"), "--from", f"{flood},{honest}", "--json",
                  home=tmp_path / "P", env={"MERGENET_MAX_BLOB_BYTES": str(CAP)}, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # abandoning a holder is logged at INFO: shown with -v only
    assert json.loads(res.stdout)["sources"] == [honest]
    assert partials(tmp_path / "P") == []


def test_lying_sizes_in_the_first_ad_do_not_get_the_honest_holder_blamed(published, serve, tmp_path):
    # The liar's ad verifies (sizes are unsigned) and says every file is 1 byte; it serves nothing.
    liar = serve(with_sizes(published.ad, 1), TransferServicer(lambda digest: None))
    honest = serve(published.ad, TransferServicer(published.blob_path))
    peers = PeerTable()
    result = pull(tmp_path, published, [liar, honest], peers)
    assert result.sources == (honest,) and not peers.is_bad(honest)
    assert folder_bytes(result.path) == folder_bytes(published.folder)


def test_lying_sizes_from_the_streaming_holder_itself_are_not_held_against_it(published, serve, tmp_path):
    only = serve(with_sizes(published.ad, 1), TransferServicer(published.blob_path))
    peers = PeerTable()
    result = pull(tmp_path, published, [only], peers)
    assert result.sources == (only,) and not peers.is_bad(only)
    assert result.bytes_fetched > len(published.ad.files)


def test_holders_with_malformed_ads_are_skipped(published, serve, tmp_path):
    """Garbled ads, including ones whose malformed statement carries a genuine signature (so the
    parser, not the signature check, meets it: e.g. nesting deep enough to raise RecursionError)."""
    ad = published.ad
    statement = json.loads(base64.b64decode(json.loads(ad.signature)["dsseEnvelope"]["payload"]))
    bad_serialization = {**statement, "predicate": {**statement["predicate"], "serialization": []}}
    garbled = [
        dataclasses.replace(ad, signature=published.sign(b"[" * 100_000)),
        dataclasses.replace(ad, signature=published.sign(json.dumps(bad_serialization).encode())),
        dataclasses.replace(ad, signature=published.sign(b"[1]")),
        dataclasses.replace(ad, signature=published.sign(b"1" * 5000)),
        dataclasses.replace(ad, manifest=b"[]"),
        dataclasses.replace(ad, manifest=b'{"format": 7, "publisher": []}'),
        dataclasses.replace(ad, manifest=b"\xff\xfe not json"),
        dataclasses.replace(ad, signature=b"[1, 2, 3]"),
        dataclasses.replace(ad, signature=b'{"statement": null, "signature": 5}'),
        dataclasses.replace(ad, signature=b""),
    ]
    nothing = TransferServicer(lambda digest: None)
    bad = [serve(g, nothing) for g in garbled]
    honest = serve(ad, TransferServicer(published.blob_path))
    peers = PeerTable()
    result = pull(tmp_path, published, [*bad, honest], peers)
    assert result.sources == (honest,)
    assert all(peers.is_bad(addr) for addr in bad) and not peers.is_bad(honest)
