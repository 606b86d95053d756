"""Helpers for multi-node tests: real `mergenet node start` subprocesses on 127.0.0.1 port 0,
each in its own session so that everything it spawns (DHT child, p2pd) can be found and reaped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass
class RunningNode:
    home: Path
    proc: subprocess.Popen
    addr: str
    dht_maddrs: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def session_procs(self) -> list[psutil.Process]:
        """Every live process in this node's session (the node, its DHT child, p2pd)."""
        return session_members(self.pid)


def session_members(sid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (OSError, psutil.Error):
            continue
    return out


def wait_gone(sid: int, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = session_members(sid)
    return left


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node.cli.main", *args, "--home", str(home)], cwd=REPO,
                          env={**os.environ, "MERGENET_NO_PROGRESS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


class Swarm:
    """Starts nodes and guarantees that, at teardown, none of them or their children remain."""

    def __init__(self) -> None:
        self.nodes: list[RunningNode] = []

    def start(self, home: Path, *flags: str, env: dict[str, str] | None = None) -> RunningNode:
        home.mkdir(parents=True, exist_ok=True)
        (home / "node.json").unlink(missing_ok=True)
        log = open(home / "stderr.log", "w")  # noqa: SIM115 - the node owns it for its lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.node.launch", "node", "start", "--home", str(home), "--listen",
             "127.0.0.1:0", *flags],
            cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            info_path = home / "node.json"
            if info_path.exists():
                info = json.loads(info_path.read_text())
                node = RunningNode(home, proc, info["addr"], info["dht_maddrs"])
                self.nodes.append(node)
                return node
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}: {(home / 'stderr.log').read_text()[-2000:]}")
            time.sleep(0.05)
        proc.kill()
        raise RuntimeError("node did not start in time")

    def stop(self, node: RunningNode, sig: int = signal.SIGTERM) -> int:
        if node.proc.poll() is None:
            node.proc.send_signal(sig)
        return node.proc.wait(STOP_TIMEOUT_S)

    def close(self) -> list[str]:
        """Stop every node, kill whatever survives; return descriptions of stray processes."""
        strays = []
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                strays.append(f"node {node.pid} ignored SIGTERM")
            for proc in wait_gone(node.pid, 5.0):
                strays.append(f"{proc.name()} (pid {proc.pid}) outlived node {node.pid}")
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        return strays


def submit_copy(model_dir: Path, home: Path, workdir: Path) -> tuple[str, Path]:
    """Sign and store a copy of `model_dir` in `home`; (model id, the signed folder)."""
    from registry.local import LocalRegistry

    dst = workdir / f"{model_dir.name}-{len(list(workdir.iterdir())) if workdir.exists() else 0}"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, dst)
    reg = LocalRegistry(home)
    try:
        return reg.submit(dst).id, dst
    finally:
        reg.close()


def clone_home(src: Path, dst: Path) -> Path:
    """A second holder of the same models: a copy of a home (minus its node file and logs)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("node.json", "*.log", "logs"))
    return dst


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
