"""docker/: the compose file's nodes start with the image's own command, configured only by
environment variables, and their health check is the probe shipped in the package. No Docker
engine or base image is used: the test runs the container's command and health check here,
with the addresses moved to 127.0.0.1 and free ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from node.process.settings import SPECS
from tests.node.netutil import wait_gone

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
PROBE = ["python", "-m", "node.process.healthcheck", "127.0.0.1:7470"]

pytestmark = pytest.mark.timeout(180)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of a Dockerfile instruction (ENTRYPOINT, CMD)."""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.startswith(instruction + " "):
            return json.loads(line[len(instruction) + 1:])
    raise AssertionError(f"Dockerfile has no {instruction}")


def local(value: str) -> str:
    """A container address moved onto loopback with a free port."""
    return "127.0.0.1:0" if value.startswith("0.0.0.0:") else value


def test_every_node_runs_the_images_command_configured_by_its_environment():
    services = compose()["services"]
    assert dockerfile_json("ENTRYPOINT") == ["mergenet"]
    known = {*(s.env for s in SPECS), "MERGENET_NODE"}
    for name, svc in services.items():
        assert svc["command"] == dockerfile_json("CMD") == ["node", "start"], name
        assert set(svc["environment"]) <= known, f"{name}: unknown variables {set(svc['environment']) - known}"
        assert svc["environment"]["MERGENET_ADVERTISE"] == f"{name}:7470"
        assert svc["healthcheck"]["test"] == ["CMD", *PROBE]
    assert services["node2"]["environment"]["MERGENET_PEERS"] == "node1:7470"


def test_the_container_command_and_health_check_work(tmp_path):
    svc = compose()["services"]["node1"]
    env = {**os.environ, "MERGENET_HOME": str(tmp_path / "data"), "MERGENET_NO_PROGRESS": "1"}
    env.update({k: local(str(v)) for k, v in svc["environment"].items() if k != "MERGENET_ADVERTISE"})
    env.pop("MERGENET_NODE")  # node1:7470 names the container; here the probe is given the address
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", *svc["command"]], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    probe = [sys.executable if a == "python" else a for a in PROBE[:-1]]
    try:
        info_path = tmp_path / "data" / "node.json"
        deadline = time.monotonic() + 90
        while not info_path.exists():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "node did not start"
            time.sleep(0.1)
        info = json.loads(info_path.read_text())
        assert info["addr"].startswith("127.0.0.1:") and info["dht_maddrs"]  # the DHT is on, as in the image
        with urllib.request.urlopen(f"http://{info['metrics']}/metrics", timeout=10) as reply:
            assert b"mergenet_models_held" in reply.read()
        with urllib.request.urlopen(f"http://{info['status']}/state.json", timeout=10) as reply:
            assert json.load(reply)["node"]["addr"] == info["addr"]
        ok = subprocess.run([*probe, info["addr"]], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert wait_gone(proc.pid, 10) == []
    down = subprocess.run([*probe, info["addr"]], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "unreachable" in down.stderr
