"""Pull throughput over loopback, verification included, next to a plain TCP copy of the same bytes.

    python benchmarks/pull_bench.py [--size-mib 1024] [--shards 4] [--repeat 3] [--workdir DIR]

1. Builds a signed model of SIZE MiB (random float32 tensors in SHARDS safetensors files) in
   home A and starts `mergenet node start --no-dht` on it (a real subprocess).
2. Times `pull_from_network` into home B: signed manifest check, streaming every blob over the
   Transfer service into partial files, sha256 checks, registry ingest (which re-verifies), and
   the atomic placement of the output folder.
3. Times a plain TCP copy of the same shard files between two processes (sender: sendfile,
   receiver: recv into a file), the floor any transfer protocol has to beat.
Both sides run REPEAT times, interleaved (pull, copy, pull, copy, ...), each into a fresh home and
folder after `sync` (so one run's writeback does not slow the next); prints every run, the median
of each side and the ratio of the medians (target: pull ≥ 60% of the plain copy), with the load
average at the start and the end. On a loaded machine (load average above QUIET_LOAD_PER_CPU per
CPU at the start) the ratio is not a result, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECV_BUF = 4 << 20
# Above this 1-minute load average per CPU the machine is not quiet: other work shares the
# cores with both sides unevenly, and the figures say more about it than about the transfer.
QUIET_LOAD_PER_CPU = 0.25


def make_model(folder: Path, size_mib: int, shards: int) -> None:
    """A Llama-shaped config plus SHARDS safetensors files of random float32 tensors."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_shard = size_mib // shards
    index = {"metadata": {"total_size": 0}, "weight_map": {}}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for t in range(per_shard // 16):  # 16 MiB tensors: 4 * 1024 * 1024 float32
            key = f"model.layers.{s}.mlp.w{t}.weight"
            tensors[key] = rng.standard_normal((1024, 4096), dtype=np.float32)
            index["weight_map"][key] = name
            index["metadata"]["total_size"] += tensors[key].nbytes
        save_file(tensors, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                     "hidden_size": 4096, "num_hidden_layers": shards}))


def start_node(home: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "node", "start", "--no-dht", "--listen",
                             "127.0.0.1:0", "--home", str(home)], cwd=REPO, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    for _ in range(600):
        if (home / "node.json").exists():
            return proc, json.loads((home / "node.json").read_text())["addr"]
        if proc.poll() is not None:
            raise SystemExit("the holder node failed to start")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the holder node did not start in time")


def tcp_sender(port_file: Path, files: list[str]) -> None:
    """Child process: serve the files back to back over one TCP connection with sendfile."""
    srv = socket.create_server(("127.0.0.1", 0))
    port_file.write_text(str(srv.getsockname()[1]))
    conn, _ = srv.accept()
    for name in files:
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            sent = 0
            while sent < size:
                sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
    conn.close()


def plain_tcp_copy(files: list[Path], out_dir: Path) -> float:
    """Seconds to copy `files` from a sender process into out_dir over loopback TCP."""
    port_file = out_dir / "port"
    sender = subprocess.Popen([sys.executable, __file__, "--tcp-sender", str(port_file), *map(str, files)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.01)
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", int(port_file.read_text()))) as sock:
            buf = bytearray(RECV_BUF)
            view = memoryview(buf)
            for src in files:
                left = src.stat().st_size
                with open(out_dir / src.name, "wb") as out:
                    while left:
                        n = sock.recv_into(view[:min(left, RECV_BUF)])
                        if not n:
                            raise SystemExit("sender closed early")
                        out.write(view[:n])
                        left -= n
        return time.perf_counter() - start
    finally:
        sender.wait(30)


def time_pull(work: Path, run: int, model_id: str, addr: str, total: int) -> tuple[float, float]:
    """(seconds for the whole pull, seconds until the last byte arrived) into a fresh home."""
    from node.network.peers import PeerTable
    from node.transfer.pull import pull_from_network
    from registry.local import LocalRegistry

    home, out = work / f"B{run}", work / f"pulled{run}"
    reg = LocalRegistry(home)
    streamed = [0.0]

    def progress(done: int, total_bytes: int) -> None:
        if done >= total_bytes and not streamed[0]:
            streamed[0] = time.perf_counter()

    os.sync()
    start = time.perf_counter()
    try:
        result = pull_from_network(reg, model_id, out, [addr], peers=PeerTable(), progress=progress)
        took = time.perf_counter() - start
    finally:
        reg.close()
    if result.bytes_fetched != total:
        raise SystemExit(f"pull fetched {result.bytes_fetched} bytes, expected {total}")
    shutil.rmtree(home)
    shutil.rmtree(out)
    return took, streamed[0] - start


def time_copy(work: Path, run: int, shards: list[Path]) -> float:
    copy_dir = work / f"tcp{run}"
    copy_dir.mkdir()
    os.sync()
    took = plain_tcp_copy(shards, copy_dir)
    shutil.rmtree(copy_dir)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, interleaved (default 3)")
    parser.add_argument("--workdir", help="scratch folder (default: a temp dir, removed afterwards)")
    parser.add_argument("--tcp-sender", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tcp_sender:
        tcp_sender(Path(args.tcp_sender[0]), args.tcp_sender[1:])
        return

    from registry.local import LocalRegistry

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pull-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = work / "model"
        make_model(model, args.size_mib, args.shards)
        reg_a = LocalRegistry(work / "A")
        model_id = reg_a.submit(model).id
        reg_a.close()
        shards = sorted(model.glob("*.safetensors"))
        total = sum(p.stat().st_size for p in model.iterdir() if p.name not in ("mergenet.json", "model.sig"))
        tcp_bytes = sum(p.stat().st_size for p in shards)

        cpus = os.cpu_count() or 1
        load_start = os.getloadavg()
        mib = 1 << 20
        print(f"model: {total / mib:.0f} MiB in {len(shards)} shards, {cpus} CPUs, "
              f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
        pulls, copies = [], []
        holder, addr = start_node(work / "A")
        try:
            for run in range(args.repeat):
                pull_s, streamed_s = time_pull(work, run, model_id, addr, total)
                tcp_s = time_copy(work, run, shards)
                pulls.append(total / mib / pull_s)
                copies.append(tcp_bytes / mib / tcp_s)
                print(f"run {run + 1}: pull {pull_s:5.2f} s {pulls[-1]:7.1f} MiB/s (last byte at {streamed_s:5.2f} s), "
                      f"plain TCP copy {tcp_s:5.2f} s {copies[-1]:7.1f} MiB/s")
        finally:
            holder.send_signal(signal.SIGTERM)
            holder.wait(30)

        pull_rate, tcp_rate = statistics.median(pulls), statistics.median(copies)
        print(f"median mergenet pull (verified, ingested, placed): {pull_rate:8.1f} MiB/s")
        print(f"median plain TCP copy between two processes:       {tcp_rate:8.1f} MiB/s")
        print(f"pull / plain copy: {pull_rate / tcp_rate:.0%} (target >= 60%); "
              f"load average at end {os.getloadavg()[0]:.2f}")
        if load_start[0] > QUIET_LOAD_PER_CPU * cpus:
            print(f"NOT A RESULT: the machine was loaded (load average {load_start[0]:.2f} on {cpus} CPUs, quiet is "
                  f"<= {QUIET_LOAD_PER_CPU * cpus:.2f}); other work skews the two sides unevenly; rerun when quiet")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
