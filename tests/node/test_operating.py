"""Running a node day to day (issue 12): one node per home, bounded stops, `node stop`, the JSON
log, the settings file, holders seen from every node, join hints that work as printed, a port
clash in one line, and what `plan propose` / `plan status --wait` tell while a plan waits."""

from __future__ import annotations

import json
import logging.handlers
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.node import test_cli_network
from tests.node.netutil import REPO, run_cli, wait_gone
from tests.node.test_cli_network import wait_for

pytestmark = pytest.mark.timeout(180)
make_node = test_cli_network.make_node  # the in-process node fixture the network CLI tests use


def test_a_second_node_on_a_home_is_refused_naming_the_first(swarm, tmp_path):
    first = swarm.start(tmp_path / "A", "--no-dht")
    second = run_cli("node", "start", "--listen", "127.0.0.1:0", "--no-dht", home=tmp_path / "A", timeout=60)
    assert second.returncode == 1
    assert f"pid {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert first.proc.poll() is None  # the running node is untouched


def test_sigterm_stops_a_node_whose_dht_child_died(swarm, tmp_path):
    node = swarm.start(tmp_path / "D")
    dht_child = next(p for p in psutil.Process(node.pid).children()
                     if any(g.name() == "p2pd" for g in p.children()))  # the DHT child runs p2pd
    dht_child.kill()  # what a second node on the same home used to cause
    wait_for(lambda: not dht_child.is_running() or dht_child.status() == psutil.STATUS_ZOMBIE, timeout=5)
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(40)  # the watchdog's deadline (30 s) at the very worst
    assert time.monotonic() - started < 40
    assert wait_gone(node.pid, 10.0) == []


def test_a_stop_that_hangs_ends_hard_and_takes_its_children(tmp_path):
    script = ("import subprocess, time\n"
              "from node.process.shutdown import StopWatchdog\n"
              "child = subprocess.Popen(['sleep', '60'])\n"
              "StopWatchdog(on_first=lambda: None, deadline_s=0.5).install()\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 1
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    # A second signal does not wait for the deadline.
    proc = subprocess.Popen([sys.executable, "-c", script.replace("0.5", "60")], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 1


def test_node_stop_and_the_json_log(swarm, tmp_path):
    a = swarm.start(tmp_path / "A", "--no-dht")
    b = swarm.start(tmp_path / "B", "--no-dht", "--peers", a.addr)
    log_path = tmp_path / "A" / "logs" / "node.log"
    wait_for(lambda: "peer joined" in log_path.read_text())
    stopped = run_cli("node", "stop", "--json", home=tmp_path / "B")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {"stopped": True, "pid": b.pid, "home": str(tmp_path / "B")}
    assert b.proc.poll() == 0 and wait_gone(b.pid, 5.0) == []
    again = run_cli("node", "stop", home=tmp_path / "B")
    assert again.returncode == 0 and "no node is running" in again.stdout
    wait_for(lambda: "peer left" in log_path.read_text(), timeout=45)  # goodbyes are checked 3 s and 12 s later

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]  # every line is JSON
    joined = next(r for r in lines if r["msg"].startswith("peer joined"))
    assert joined["peer"] == b.addr and joined["level"] == "INFO" and joined["logger"] == "node.network.view"
    assert any(r["msg"].startswith("peer left") and r["peer"] == b.addr for r in lines)
    assert any("started" in r["msg"] and r["peer"] == a.addr for r in lines)


def test_the_file_log_rotates_and_carries_ids(tmp_path):
    from node.process.config import NodeConfig
    from node.process.daemon import Node
    from node.process.logs import LOG_BACKUPS, LOG_MAX_BYTES

    node = Node(NodeConfig(home=tmp_path / "R", listen="127.0.0.1:0", dht=False))
    node.start()
    try:
        handler = node._log_handler
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert (handler.maxBytes, handler.backupCount) == (LOG_MAX_BYTES, LOG_BACKUPS) and LOG_MAX_BYTES > 0
        plan_id = "sha256:" + "ab" * 32
        logging.getLogger("node.plans.engine").info("plan %s failed", plan_id, extra={"plan_id": plan_id})
    finally:
        node.stop()
    last = [json.loads(line) for line in node.log_path.read_text().splitlines()]
    failed = next(r for r in last if r["msg"].endswith("failed"))
    assert failed["plan_id"] == plan_id and failed["ids"] == [plan_id]


def test_settings_file_env_and_flags_in_that_order(cli, tmp_path, monkeypatch):
    home = tmp_path / "H"
    home.mkdir()
    (home / "config.toml").write_text('listen = "127.0.0.1:7600"\npeers = ["127.0.0.1:7601"]\n'
                                      'consent_policy = "manual"\nmetrics_port = 9470\n'
                                      '[limits]\nmin_free_bytes = 12345\n')
    monkeypatch.setenv("MERGENET_PEERS", "127.0.0.1:7602,127.0.0.1:7603")
    monkeypatch.delenv("MERGENET_CONSENT_POLICY", raising=False)
    res = cli("node", "config", "--listen", "127.0.0.1:7604", "--json", home_dir=home)
    assert res.code == 0, res.err
    got = {k: (v["value"], v["source"]) for k, v in json.loads(res.out)["settings"].items()}
    assert got["listen"] == ("127.0.0.1:7604", "flag")
    assert got["peers"] == (["127.0.0.1:7602", "127.0.0.1:7603"], "env")
    assert got["consent_policy"] == ("manual", "file") and got["metrics_port"] == ("9470", "file")
    assert got["min_free_bytes"] == (12345, "file") and got["dht"] == (True, "default")
    text = cli("node", "config", home_dir=home).out
    assert "consent_policy" in text and "# file" in text and "MERGENET_PEERS" in text

    (home / "config.toml").write_text('listen = "127.0.0.1:7600"\nlisten_port = 3\n')
    bad = cli("node", "config", home_dir=home)
    assert bad.code == 2 and "listen_port" in bad.err and "config.toml" in bad.err
    (home / "config.toml").write_text("dht = 'maybe'\n")
    assert cli("node", "config", home_dir=home).code == 2


def test_node_start_takes_peers_and_policy_from_the_file(swarm, tmp_path):
    a = swarm.start(tmp_path / "A", "--no-dht")
    home = tmp_path / "B"
    home.mkdir()
    (home / "config.toml").write_text(f'peers = ["{a.addr}"]\ndht = false\n')
    swarm.start(home)
    info = json.loads(run_cli("node", "status", "--node", a.addr, "--json", home=tmp_path / "A").stdout)
    assert info["peers"] == 1


def test_every_holder_is_counted_from_each_node(cli, make_node, model_copy, tmp_path):
    a = make_node("A")
    b = make_node("B", a.addr)
    c = make_node("C", b.addr)
    model_id = json.loads(cli("submit", model_copy("gpt2", 1), "--json", "--node", a.addr,
                              home_dir=a.home.root).out)["id"]
    for n in (b, c):
        wait_for(lambda n=n: model_id in cli("ls", "--remote", "--json", "--node", n.addr, home_dir=n.home.root).out)
        res = cli("pull", model_id, "-o", tmp_path / f"out-{n.addr[-5:]}", "--node", n.addr, home_dir=n.home.root)
        assert res.code == 0, res.err

    def holders_seen_by_c():
        rows = json.loads(cli("ls", "--remote", "--json", "--node", c.addr, home_dir=c.home.root).out)["models"]
        return next(sorted(r["holders"]) for r in rows if r["id"] == model_id) == sorted([a.addr, b.addr, c.addr])
    wait_for(holders_seen_by_c, timeout=30)
    assert "holders=3" in cli("ls", "--remote", "--node", c.addr, home_dir=c.home.root).out


def test_the_join_hint_works_as_printed_and_a_port_clash_is_one_line(swarm, tmp_path):
    home = tmp_path / "first"
    proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "node", "start", "--home", str(home),
                             "--listen", "127.0.0.1:0", "--no-dht"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out = []
        while not any("--peers" in line for line in out):
            out.append(proc.stdout.readline())
            assert out[-1], "node start ended before printing a join hint"
        addr = out[0].split()[-1]
        hint = next(line.strip() for line in out if line.strip().startswith("mergenet node start"))
        flags = hint.split()[3:]  # as printed, after `mergenet node start`
        joined = swarm.start(Path(flags[flags.index("--home") + 1]), *flags, "--no-dht")
        assert joined.home != home
        wait_for(lambda: json.loads(run_cli("node", "status", "--node", addr, "--json", home=home).stdout)["peers"]
                 == 1)
        port = addr.rsplit(":", 1)[1]
        clash = run_cli("node", "start", "--listen", f"127.0.0.1:{port}", "--no-dht", home=tmp_path / "other",
                        timeout=60)
        assert clash.returncode == 1 and len(clash.stderr.strip().splitlines()) == 1
        assert "already in use" in clash.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)


def test_propose_says_how_many_bidders_it_needs_and_wait_prints_changes(cli, make_node, families, tmp_path):
    from tests.node.netutil import submit_copy

    base, experts = families["gpt2"]
    a = make_node("A")
    b = make_node("B", a.addr)
    wait_for(lambda: json.loads(cli("node", "status", "--node", a.addr, "--json").out)["peers"] == 1)
    ids = [submit_copy(m, a.home.root, tmp_path / "work")[0] for m in (base, *experts)]
    recipe = tmp_path / "linear.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": ids[1], "parameters": {"weight": 0.5}}, {"model": ids[2], "parameters": {"weight": 0.5}}]}))
    res = cli("plan", "propose", recipe, "--node", a.addr, "--json", "--expires", "20s", home_dir=a.home.root)
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert (doc["bidders_needed"], doc["nodes_known"]) == (3, 2)
    assert "needs 3 bidding nodes" in res.err and "2 nodes known" in res.err and "--verifiers 1" in res.err
    waited = cli("plan", "status", doc["plan_id"][:16], "--wait", "--timeout", "3", "--node", b.addr,
                 home_dir=b.home.root)
    assert waited.code == 1 and "after 3s" in waited.err
    changes = [line for line in waited.err.splitlines() if line[:2].isdigit()]
    assert changes and "bids" in changes[0] and waited.out == ""


def test_wait_prints_a_line_only_when_the_plan_moves():
    from node.cli.plan_cmds import ChangePrinter

    said: list[str] = []
    printer = ChangePrinter(said.append)
    doc = {"state": "bidding", "reason": "", "consents": [], "bids": [], "executor": None, "attestations": [],
           "attestations_needed": 2, "result": None}
    printer(doc)
    printer(doc)
    printer({**doc, "bids": [{"key_id": "k"}]})
    printer({**doc, "state": "committed", "bids": [{"key_id": "k"}], "executor": {"address": "127.0.0.1:9"}})
    assert len(said) == 3 and "1 bids" in said[1] and "executor 127.0.0.1:9" in said[2]
