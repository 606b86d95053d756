"""`mergenet demo` runs the whole story green on real nodes (DHT on) and leaves no process
behind, also when interrupted with Ctrl-C half way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MERGENET_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}


def leftovers(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(240)
def test_demo_json_runs_green(tmp_path):
    work = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "node.cli.main", "demo", "--json", "--workdir", str(work)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    plan = summary["plan"]
    assert plan["state"] == "published" and summary["dht"] is True
    assert [c["accept"] for c in plan["consents"]] == [True]
    assert len(plan["attestations"]) == 2 and all(a["passed"] for a in plan["attestations"])
    assert summary["merged"]["verified"] and summary["merged"]["attestations_indexed"] == 2
    assert summary["stray_processes"] == 0 and not leftovers(str(work))
    assert "published" in proc.stderr and "gamma proposes" in proc.stderr  # the story goes to stderr
    assert (Path(summary["merged"]["path"]) / "model.sig").is_file()


@pytest.mark.timeout(120)
def test_ctrl_c_stops_every_node(tmp_path):
    work = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "demo", "--no-dht", "--workdir", str(work)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (work / "homes" / "beta" / "node.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert leftovers(str(work))  # nodes are running
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopping the nodes" in proc.stdout.read()
    assert not leftovers(str(work))
