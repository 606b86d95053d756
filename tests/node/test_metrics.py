"""The Prometheus endpoint of a real node (`--metrics-port`), scraped over HTTP and parsed with
prometheus_client's own parser: state gauges follow the node, event counters follow what it did."""

from __future__ import annotations

import json
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from node.network.client import connect, operator_metadata, registry_stub
from node.network.remote import notify_submitted
from node.plans.client import PlansClient
from node.plans.model import VerificationPolicy
from node.process import metrics
from node.process.rpc_metrics import MetricsInterceptor
from node.transfer.pull import pull
from protos import mergenet_pb2 as pb
from protos import mergenet_pb2_grpc as pb_grpc
from registry.local import LocalRegistry
from tests.node.test_status_page import wait_for

pytestmark = pytest.mark.timeout(180)


def scrape(addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def local(name: str, **labels: str) -> float:
    """A sample of this (test) process's own event metrics."""
    return metrics.EVENTS.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[Path, list[Path]]:
    from node.demo.models import make_family

    return make_family(tmp_path_factory.mktemp("metrics") / "family", arch="llama", n_experts=2, seed=3)


def test_a_nodes_metrics_follow_its_state_and_events(family, swarm, tmp_path):
    base_dir, experts = family
    home = tmp_path / "n1"
    reg = LocalRegistry(home)
    try:
        base = reg.submit(base_dir, license="MIT").id
        ids = [reg.submit(e, base=base, license="MIT").id for e in experts]
        size = reg.get(base).size
    finally:
        reg.close()
    node = swarm.start(home, "--no-dht", "--metrics-port", "0")
    addr = json.loads((home / "node.json").read_text())["metrics"]
    assert addr.startswith("127.0.0.1:")  # loopback unless a host is given
    first = scrape(addr)
    assert value(first, "mergenet_models_held") == 3
    assert value(first, "mergenet_peers") == 0
    assert value(first, "mergenet_bytes_served_total") == 0

    other = swarm.start(tmp_path / "n2", "--no-dht", "--peers", node.addr)
    assert "metrics" not in json.loads((other.home / "node.json").read_text())  # opt-in
    wait_for(lambda: value(scrape(addr), "mergenet_peers") == 1)

    recipe = {"merge_method": "ties", "base_model": base, "dtype": "float32",
              "models": [{"model": i, "parameters": {"weight": 0.5, "density": 0.5}} for i in ids]}
    PlansClient(node.addr, operator_metadata(home)).propose(recipe, VerificationPolicy(2))
    plans = scrape(addr)
    assert sum(value(plans, "mergenet_plans", state=s) for s in ("proposed", "consenting", "bidding", "failed")) == 1

    # A pull from the node: it counts the bytes it served; the puller (this process) what it fetched.
    fetched_before = local("mergenet_bytes_fetched_total")
    pulls_before = local("mergenet_jobs_total", job="pull", outcome="ok")
    got = pull(base, tmp_path / "puller", tmp_path / "out", sources=[node.addr])
    assert size * 0.9 < got.bytes_fetched <= size  # the blobs; the manifest comes with the ad
    assert local("mergenet_bytes_fetched_total") - fetched_before == got.bytes_fetched
    assert local("mergenet_jobs_total", job="pull", outcome="ok") == pulls_before + 1
    after = scrape(addr)
    assert value(after, "mergenet_bytes_served_total") == got.bytes_fetched
    fetch = {"method": "/mergenet.v1.Transfer/Fetch", "code": "OK"}
    assert value(after, "mergenet_rpc_seconds_count", **fetch) >= 1
    assert value(after, "mergenet_rpc_seconds_bucket", le="+Inf", **fetch) >= 1

    # Hostile input is counted by reason: a forged advertisement, a garbage plan statement.
    with connect(node.addr) as ch:
        forged = pb.ModelAd(model_id=base, manifest=b"{}", signature=b"not a bundle")
        reply = registry_stub(ch).Advertise(pb.AdvertiseRequest(
            sender=pb.PeerInfo(grpc_addr="127.0.0.9:1", key_id="ab" * 32), models=[forged]), timeout=10)
        assert reply.rejected == 1
        statement = pb.PlanStatement(bundle=json.dumps({"payload": "forged"}).encode())
        assert not pb_grpc.PlansStub(ch).Bid(statement, timeout=10).accepted
    hostile = scrape(addr)
    assert value(hostile, "mergenet_refused_total", reason="bad_ad") == 1
    assert value(hostile, "mergenet_refused_total", reason="bad_statement") == 1

    # A model added to the home shows at the next scrape.
    extra = tmp_path / "extra"
    extra.mkdir()
    for f in base_dir.iterdir():
        (extra / f.name).write_bytes(f.read_bytes())
    (extra / "config.json").write_text((base_dir / "config.json").read_text().replace("{", '{"x_extra": 1, ', 1))
    reg = LocalRegistry(home)
    try:
        notify_submitted(node.addr, reg.submit(extra).id)
    finally:
        reg.close()
    assert value(scrape(addr), "mergenet_models_held") == 4


def test_rate_limited_requests_are_counted_with_their_latency():
    """Any servicer that answers RESOURCE_EXHAUSTED is counted as rate limited by the interceptor."""
    def busy(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[MetricsInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Busy", {"Call": grpc.unary_unary_rpc_method_handler(busy)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    refused = local("mergenet_refused_total", reason=metrics.RATE_LIMITED)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.Busy/Call")(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(0)
    assert local("mergenet_refused_total", reason=metrics.RATE_LIMITED) == refused + 1
    assert local("mergenet_rpc_seconds_count", method="/test.Busy/Call", code="RESOURCE_EXHAUSTED") == 1


def test_ports_bind_loopback_unless_given_a_host_and_flags_beat_the_environment(tmp_path, monkeypatch):
    from node.errors import NodeInputError
    from node.process.config import NodeConfig
    from node.process.settings import load_settings

    def config(flags: dict, environ: dict) -> NodeConfig:
        return NodeConfig.from_settings(tmp_path, load_settings(tmp_path, {"dht": False, **flags},
                                                                environ=environ).values)

    env = {"MERGENET_METRICS_PORT": "0.0.0.0:9470", "MERGENET_LISTEN": "127.0.0.1:7999"}
    cfg = config({"status_port": "7480"}, env)
    assert (cfg.metrics, cfg.status, cfg.listen) == ("0.0.0.0:9470", "127.0.0.1:7480", "127.0.0.1:7999")
    assert config({"listen": "127.0.0.1:0", "metrics_port": "9471"}, env).metrics == "127.0.0.1:9471"
    assert config({}, {}).metrics == "" and config({}, {}).status == ""  # off unless given
    with pytest.raises(NodeInputError, match="--status-port"):
        config({"status_port": "no-port"}, {})


def test_a_taken_port_fails_the_start_and_leaves_nothing_running(tmp_path):
    import socket
    import threading

    from node.errors import NodeError
    from node.process.config import NodeConfig
    from node.process.daemon import Node

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        before = set(threading.enumerate())
        node = Node(NodeConfig(tmp_path / "home", listen="127.0.0.1:0", dht=False, metrics="127.0.0.1:0", status=busy))
        with pytest.raises(NodeError, match="status page"):
            node.start()
    assert not (tmp_path / "home" / "node.json").exists()
    # the metrics endpoint started first: it was stopped again (its serve_forever thread is gone)
    assert [t.name for t in threading.enumerate() if t not in before and t.is_alive()
            and ("serve_forever" in t.name or t.name == "status-page")] == []
