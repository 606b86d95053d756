"""Unit tests for the node's small pieces: address parsing, the peer table, DHT record parsing,
Advertise batching and the Transfer digest check."""

from __future__ import annotations

import pytest

from node.errors import NodeInputError
from node.network.dht_records import NodeRecord
from node.network.peers import MAX_PEERS, PeerTable
from node.process.config import NodeConfig, parse_hostport, split_list
from registry.ids import digest_hex


def test_parse_hostport_and_config_validation(tmp_path):
    assert parse_hostport("127.0.0.1:7470") == ("127.0.0.1", 7470)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    for bad in ("localhost", ":80", "host:", "host:99999", "host:port"):
        with pytest.raises(NodeInputError, match="HOST:PORT"):
            parse_hostport(bad)
    with pytest.raises(NodeInputError, match="--peers entry"):
        NodeConfig(home=tmp_path, peers=("nonsense",))
    assert split_list(" a:1, ,b:2 ") == ("a:1", "b:2")


def test_config_from_flags_has_no_test_knobs(tmp_path, monkeypatch):
    from node.process.settings import load_settings

    # Test-only switches live in tests/node/launch.py; the product's configuration ignores them.
    monkeypatch.setenv("MERGENET_TEST_TAMPER", "1")
    settings = load_settings(tmp_path, {"peers": "127.0.0.9:7470", "dht": False}, environ={})
    cfg = NodeConfig.from_settings(tmp_path, settings.values)
    assert (cfg.listen, cfg.peers, cfg.dht) == ("127.0.0.1:7470", ("127.0.0.9:7470",), False)
    assert not any("tamper" in f or "throttle" in f for f in NodeConfig.__dataclass_fields__)


def test_peer_table_remembers_bad_peers_and_orders_them_last():
    table = PeerTable(self_addr="127.0.0.1:1")
    assert table.add("127.0.0.1:2") is True
    assert table.add("127.0.0.1:2") is False  # refresh, not new
    assert table.add("127.0.0.1:1") is False  # ourselves
    assert table.add("garbage") is False
    table.add("127.0.0.1:3")
    table.mark_bad("127.0.0.1:2", "served flipped bytes")
    assert table.is_bad("127.0.0.1:2") and not table.is_bad("127.0.0.1:3")
    assert table.good() == ["127.0.0.1:3"]
    assert table.order(["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:2"]) == ["127.0.0.1:3", "127.0.0.1:2"]
    assert [p.addr for p in table.gossip()] == ["127.0.0.1:3"]


def test_an_unanswering_peer_is_avoided_for_a_doubling_while_and_forgiven_when_it_answers(monkeypatch):
    import node.network.peers as peers_mod

    now = [1000.0]
    monkeypatch.setattr(peers_mod.time, "time", lambda: now[0])
    table = PeerTable()
    table.add("127.0.0.1:2")
    waits = []
    for _ in range(8):
        table.mark_unreachable("127.0.0.1:2", "DEADLINE_EXCEEDED")
        start = now[0]
        while table.is_bad("127.0.0.1:2"):
            now[0] += 1.0
        waits.append(now[0] - start)
    # One timeout costs a short pause, not the ten minutes a liar gets; repeated ones back off.
    assert waits == [15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    # Its back-off is over: rounds try it again, but it is not a good peer (not gossiped, not
    # counted) until it answers.
    assert "127.0.0.1:2" in table.round_targets() and table.good() == []
    table.mark_unreachable("127.0.0.1:2", "UNAVAILABLE")
    table.seen("127.0.0.1:2")  # it answered: no longer avoided, and the next failure starts over
    assert not table.is_bad("127.0.0.1:2") and table.contacted("127.0.0.1:2")
    assert table.good() == ["127.0.0.1:2"]
    table.mark_unreachable("127.0.0.1:2", "UNAVAILABLE")
    now[0] += 15.0
    assert not table.is_bad("127.0.0.1:2")
    # A liar stays avoided even when it answers, and a later timeout does not shorten that.
    table.mark_bad("127.0.0.1:2", "served flipped bytes")
    table.seen("127.0.0.1:2")
    table.mark_unreachable("127.0.0.1:2", "UNAVAILABLE")
    now[0] += 100.0
    assert table.is_bad("127.0.0.1:2")
    assert next(p.bad_reason for p in table.all() if p.addr == "127.0.0.1:2") == "served flipped bytes"
    now[0] += peers_mod.BAD_PEER_MEMORY_S
    assert not table.is_bad("127.0.0.1:2")


def test_peer_table_is_bounded():
    table = PeerTable()
    for i in range(MAX_PEERS + 10):
        table.add(f"127.0.{i // 250}.{i % 250 + 1}:1")
    assert len(table.all()) == MAX_PEERS


@pytest.mark.parametrize("value", [None, "x", {}, {"addr": ""}, {"addr": 5}, {"addr": "a:1", "models": "m"},
                                   {"addr": "a:1", "models": [1]}, {"addr": "a:1", "capacity": []},
                                   {"left": True}, {"addr": "a:1", "models": ["sha256:../x"]},
                                   {"addr": "a:1", "models": ["sha256:" + "a" * 64] * 5000},
                                   {"addr": "a" * 400 + ":1"}])
def test_malformed_dht_records_are_skipped(value):
    assert NodeRecord.from_value(value) is None


def test_dht_record_round_trip():
    rec = NodeRecord(addr="127.0.0.1:7", key_id="ab", version="v", capacity={"cpus": 2},
                     models=("sha256:" + "1" * 64,))
    assert NodeRecord.from_value(rec.to_value()) == rec


def test_advertise_batches_stay_under_the_limit():
    from node.network.view import ADVERTISE_BATCH_BYTES, _batches
    from protos import mergenet_pb2 as pb

    ads = [pb.ModelAd(model_id=str(i), manifest=b"x" * 200_000) for i in range(7)]
    batches = _batches(ads)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert all(sum(a.ByteSize() for a in b) <= ADVERTISE_BATCH_BYTES for b in batches)
    assert _batches([]) == []


def test_transfer_digest_check():
    hexd = "ab" * 32
    assert digest_hex(hexd) == hexd and digest_hex("sha256:" + hexd) == hexd
    for bad in ("AB" * 32, hexd[:-1], "../" + hexd, hexd + "\n", "sha256:"):
        assert digest_hex(bad) is None


def test_advertised_address(tmp_path):
    assert NodeConfig(home=tmp_path, listen="127.0.0.1:0").advertised_addr(4242) == "127.0.0.1:4242"
    named = NodeConfig(home=tmp_path, listen="0.0.0.0:7470", advertise="node1:7470")
    assert named.advertised_addr(7470) == "node1:7470"
    wild = NodeConfig(home=tmp_path, listen="0.0.0.0:7470").advertised_addr(7470)
    assert not wild.startswith("0.0.0.0") and wild.endswith(":7470")
    with pytest.raises(NodeInputError, match="--no-dht"):
        NodeConfig(home=tmp_path, dht=False, initial_peers=("/ip4/1.2.3.4/tcp/1",))
    with pytest.raises(NodeInputError, match="--advertise"):
        NodeConfig(home=tmp_path, advertise="nope")


def test_a_gossip_round_dials_its_targets_concurrently(monkeypatch):
    """Silent addresses (a flood of hearsay, dead peers) cost a round one gossip timeout, not one
    each in a row: the announce thread is what also greets newcomers and runs the next round."""
    from types import SimpleNamespace

    from node.network.view import GOSSIP_WORKERS, Network
    from registry.services.hooks import PeerRef
    from tests.node.overlap import Overlap

    peers = PeerTable(self_addr="127.0.0.1:1")
    targets = [f"127.0.0.{i + 2}:1" for i in range(12)]
    for addr in targets:
        peers.add(addr, source="flag")
    view = SimpleNamespace(ids=lambda: [], ad=lambda _mid: None)
    net = Network(PeerRef("127.0.0.1:1", "k", "v"), view, peers, discovery=None)
    dialled: list[str] = []
    overlap = Overlap()
    monkeypatch.setattr(net, "_gossip_with", overlap.wrap(lambda addr, me, ads: dialled.append(addr)))
    net.announce_once()
    assert sorted(dialled) == sorted(targets)
    assert overlap.most == GOSSIP_WORKERS


def test_failed_hearsay_stays_within_the_unseen_cap(monkeypatch):
    """A flood of gossiped addresses that all fail must not turn into a round that dials them all
    once their back-off is over: only peers we reached (or the operator's) are retried freely."""
    import node.network.peers as peers_mod
    from node.network.peers import MAX_UNSEEN_PER_ROUND

    now = [1000.0]
    monkeypatch.setattr(peers_mod.time, "time", lambda: now[0])
    table = PeerTable()
    table.add("127.0.0.2:1", source="flag")
    table.add("127.0.0.3:1")
    table.seen("127.0.0.3:1")
    flood = [f"127.0.{i // 250 + 1}.{i % 250 + 1}:2" for i in range(500)]
    for addr in flood:
        table.heard(addr)
    for addr in [*flood, "127.0.0.2:1", "127.0.0.3:1"]:
        table.mark_unreachable(addr, "DEADLINE_EXCEEDED")
    now[0] += 16.0  # every back-off is over
    targets = table.round_targets()
    assert {"127.0.0.2:1", "127.0.0.3:1"} <= set(targets)
    assert len(set(targets) & set(flood)) == MAX_UNSEEN_PER_ROUND


def test_a_peer_given_up_on_that_calls_again_is_greeted_and_waiting_greets_survive_a_round(monkeypatch):
    from types import SimpleNamespace

    from node.network.view import Network
    from registry.services.hooks import PeerRef

    peers = PeerTable(self_addr="127.0.0.1:1")
    view = SimpleNamespace(ids=lambda: [], ad=lambda _mid: None)
    net = Network(PeerRef("127.0.0.1:1", "k", "v"), view, peers, discovery=None)
    dialled: list[str] = []
    monkeypatch.setattr(net, "_gossip_with", lambda addr, me, ads: dialled.append(addr))
    peers.add("127.0.0.5:1")
    peers.seen("127.0.0.5:1")
    peers.mark_unreachable("127.0.0.5:1", "UNAVAILABLE")  # it went down; now it is back and calls us
    net.exchange_peers(PeerRef("127.0.0.5:1", "k5", "v"), [])
    net.greet_newcomers()
    assert dialled == ["127.0.0.5:1"]
    # Hearsay beyond one round's cap of unseen peers, plus a newcomer waiting to be greeted: the
    # full round reaches the newcomer even though the cap leaves it out.
    for i in range(40):
        peers.heard(f"127.0.1.{i + 1}:1")
    net.exchange_peers(PeerRef("127.0.2.1:1", "k", "v"), [])
    dialled.clear()
    net.announce_once()
    assert "127.0.2.1:1" in dialled
