"""Chaos on loopback: honest nodes merge while hostile peers attack and honest nodes crash.

    python benchmarks/chaos.py [--seconds 300] [--seed 0] [--quick] [--workdir DIR]

1. Generates a tiny Llama base and three experts, starts 6 real `mergenet node start --no-dht`
   subprocesses on 127.0.0.1 (LocalCluster) and submits the models (expert 2 with policy consent).
2. For `--seconds`, all at once and seeded:
   - honest nodes propose real merge plans through `mergenet plan propose` from their own homes;
   - 2 hostile peers (in-process, own keys, gRPC only: benchmarks/chaos_attacks.py) run random
     attacks against random honest nodes;
   - a random honest node is SIGKILLed now and then and restarted on its address a few seconds later;
   - a prober times health Check + GetNetworkInfo on random live nodes; a sampler records RSS
     (node process and children) and home size of every node.
3. Drains: attacks and kills stop, every node is up, the plans get time to finish.
4. Prints and asserts (exit 1 when any fails): every honest plan ended published or failed with a
   reason; no honest store is corrupt (`mergenet store check --json`); no node crashed; RSS and disk
   stayed under their bounds; health answered during the attacks; each attack was refused as it
   should be; no hostile plan was ever committed or merged; no Sybil ever executed or verified.

Every address used, forged ones too, is in 127.0.0.0/8; every loop is bounded in count and time;
every process started is stopped, also on Ctrl-C. `run_chaos` is the core loop
(tests/adversary/test_chaos_smoke.py runs it small).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import yaml  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from benchmarks.chaos_attacks import ATTACKS, Attacker, Victim, World, outcome_expected  # noqa: E402
from node.demo.cluster import LocalCluster, NodeProc  # noqa: E402
from node.errors import NodeError  # noqa: E402
from node.network.client import CHANNEL_OPTIONS  # noqa: E402
from protos import mergenet_pb2 as pb  # noqa: E402
from protos import mergenet_pb2_grpc as pb_grpc  # noqa: E402

# Bounds the run asserts. A node imports torch for its first merge (~0.4 GB); its home holds a few
# tiny models, plan files and a log rotated at 10 MB.
RSS_BOUND_MB = 1536
DISK_BOUND_MB = 256
PROBE_TARGET_S = 1.0  # what the README promises for health latency under attack (p99)
PROBE_BOUND_S = 5.0  # what the run asserts (as tests/adversary/test_stream_flood.py does)
PROBE_TIMEOUT_S = 10.0
PROBE_EVERY_S = 0.25
SAMPLE_EVERY_S = 2.0
CLI_TIMEOUT_S = 90.0
MAX_PLANS = 200  # bounds on every loop, whatever --seconds says
MAX_ATTACKS = 5000
MAX_KILLS = 100
THREAD_JOIN_S = 30.0  # an attack runs at most ~20 s (a forged goodbye waits for its checks)
PLAN_TTL = "20m"
# Each hostile peer connects from its own loopback address (127.0.0.21, …): a host of its own, as
# across a real network; honest nodes all come from 127.0.0.1.
HOSTILE_NET = "127.0.0.2"
METHODS = ("linear", "ties", "task_arithmetic")


@dataclass(frozen=True)
class ChaosOptions:
    """:param seconds: how long attacks, kills and proposals go on
    :param verifiers: per honest plan (each plan needs 1 + verifiers bidding nodes)
    :param drain_s: after the chaos, how long unfinished plans may take to end"""

    seconds: float = 300.0
    seed: int = 0
    honest: int = 6
    hostile: int = 2
    verifiers: int = 2
    plan_every_s: float = 12.0
    kill_every_s: float = 40.0
    down_s: tuple[float, float] = (2.0, 6.0)
    attack_pause_s: float = 0.3
    drain_s: float = 150.0
    dht: bool = False
    workdir: Path | None = None


QUICK = {"seconds": 45.0, "plan_every_s": 7.0, "kill_every_s": 18.0, "drain_s": 90.0}


@dataclass
class Figures:
    """What the loops measured; filled by the threads, read once they are joined."""

    latencies: list[float] = field(default_factory=list)
    probe_failures: list[str] = field(default_factory=list)
    rss: dict[str, list[int]] = field(default_factory=dict)
    disk: dict[str, list[int]] = field(default_factory=dict)
    attacks: Counter = field(default_factory=Counter)  # (attack, outcome) → count
    plans: list[tuple[str, str]] = field(default_factory=list)  # (plan id, proposer name)
    propose_errors: list[str] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)


class Chaos:
    """The running cluster, its attackers and its loops."""

    def __init__(self, opts: ChaosOptions, workdir: Path, say: Callable[[str], None]) -> None:
        self.opts, self.workdir, self.say = opts, workdir, say
        self.rng = random.Random(opts.seed)
        self.cluster = LocalCluster(workdir, dht=opts.dht)
        self.nodes: dict[str, NodeProc] = {}
        self.down: set[str] = set()
        self.gen: Counter = Counter()  # name → incarnation, so a probe of a node killed meanwhile is not blamed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.figures = Figures()
        self.models: dict[str, str] = {}
        self.owners: dict[str, str] = {}
        self.world: World | None = None

    # ---- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        from node.demo.models import make_family

        base, experts = make_family(self.workdir / "models", n_experts=3, seed=self.opts.seed + 1)
        names = [f"h{i}" for i in range(self.opts.honest)]
        for name in names:  # each joins through all before it, so the mesh is complete at once
            self.nodes[name] = self.cluster.start(name, peers=[n.addr for n in self.nodes.values()])
        folders = {"base": (base, "open", "MIT"), "expert1": (experts[0], "open", "MIT"),
                   "consent": (experts[1], "consent", "Apache-2.0"), "expert3": (experts[2], "open", "MIT")}
        for i, (key, (folder, policy, lic)) in enumerate(folders.items()):
            owner = names[i % len(names)]
            self.models[key] = self.nodes[owner].submit(folder, license=lic, policy=policy, name=f"chaos-{key}")
            self.owners.setdefault(owner, key)
        self.world = World(self.victims, self.incarnation, self.models, self.owners)
        self._wait_mesh()

    def _wait_mesh(self, timeout_s: float = 30.0) -> None:
        """Until every node knows every other one (gossip after the submits' announcements)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = [_network_info(n.addr) for n in self.nodes.values()]
            if all(c is not None and c.peer_count >= len(self.nodes) - 1 for c in counts):
                return
            time.sleep(0.5)

    def victims(self) -> list[Victim]:
        with self.lock:
            return [Victim(n, p.addr, p.key_id, p.home) for n, p in self.nodes.items() if n not in self.down]

    def incarnation(self, name: str) -> int:
        with self.lock:
            return self.gen[name]

    def alive(self) -> list[tuple[str, NodeProc, int]]:
        with self.lock:
            return [(n, p, self.gen[n]) for n, p in self.nodes.items() if n not in self.down]

    # ---- the loops ----------------------------------------------------------------------------

    def _loop(self, every_s: Callable[[], float], until: float, limit: int, body: Callable[[], None]) -> None:
        for _ in range(limit):
            if self.stop.wait(every_s()) or time.monotonic() >= until:
                return
            body()

    def propose_once(self) -> None:
        alive = self.alive()
        if len(alive) < 1 + self.opts.verifiers:
            return
        name, node, _ = self.rng.choice(alive)
        method = self.rng.choice(METHODS)
        experts = self.rng.sample(["expert1", "consent", "expert3"], 2)
        w = round(self.rng.uniform(0.2, 0.8), 3)
        extra = {"density": 0.6} if method == "ties" else {}
        models = [{"model": self.models[e], "parameters": {"weight": x, **extra}}
                  for e, x in zip(experts, (w, round(1 - w, 3)), strict=True)]
        recipe = {"merge_method": method, "dtype": "float32", "models": models}
        if method != "linear":
            recipe["base_model"] = self.models["base"]
        path = self.workdir / "recipes" / f"plan{len(self.figures.plans) + len(self.figures.propose_errors)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe))
        cmd = [sys.executable, "-m", "node.cli.main", "plan", "propose", str(path), "--home", str(node.home),
               "--json", "--verifiers", str(self.opts.verifiers), "--spot-check", "0.5", "--expires", PLAN_TTL]
        try:
            done = subprocess.run(cmd, cwd=REPO, env=self.cluster.env, capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.figures.propose_errors.append(f"{name}: plan propose timed out")
            return
        if done.returncode == 0:
            self.figures.plans.append((json.loads(done.stdout)["plan_id"], name))
        else:  # the proposer may have been killed meanwhile: not an honest plan then
            self.figures.propose_errors.append(f"{name}: exit {done.returncode}: {done.stderr.strip()[-200:]}")

    def kill_once(self) -> None:
        alive = self.alive()
        if len(alive) < self.opts.honest:  # one node down at a time
            return
        name, node, _ = self.rng.choice(alive)
        with self.lock:
            self.down.add(name)
            self.gen[name] += 1
        self.cluster.kill(node)
        self.figures.kills.append(name)
        self.stop.wait(self.rng.uniform(*self.opts.down_s))
        self.restart(name, node)

    def restart(self, name: str, old: NodeProc) -> None:
        peers = [v.addr for v in self.victims()]
        try:
            new = self.cluster.start(name, peers=peers, listen=old.addr)
        except NodeError as exc:
            self.figures.crashes.append(f"{name} did not restart: {exc}")
            return
        with self.lock:
            self.nodes[name] = new
            self.down.discard(name)

    def attack_loop(self, attacker: Attacker, rng: random.Random, until: float) -> None:
        order: list[str] = []

        def body() -> None:
            victims = self.victims()
            if not victims:
                return
            if not order:  # every attack once per pass, in a random order
                order.extend(rng.sample(ATTACKS, len(ATTACKS)))
            name = order.pop()
            try:
                outcomes = attacker.attack(name, rng.choice(victims))
            except grpc.RpcError as exc:  # a call outside the attack's own handling: the victim went away
                outcomes = [f"unhandled {exc.code().name}"]
            for outcome in outcomes:
                self.figures.attacks[(name, outcome)] += 1

        self._loop(lambda: self.opts.attack_pause_s, until, MAX_ATTACKS, body)

    def probe_once(self) -> None:
        alive = self.alive()
        if not alive:
            return
        name, node, gen = self.rng.choice(alive)
        start = time.monotonic()
        try:
            with grpc.insecure_channel(node.addr, options=CHANNEL_OPTIONS) as ch:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S)
                pb_grpc.RegistryStub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            with self.lock:
                killed = self.gen[name] != gen or name in self.down
            if not killed:
                self.figures.probe_failures.append(f"{name}: {exc.code().name}")
                self.figures.latencies.append(time.monotonic() - start)
            return
        self.figures.latencies.append(time.monotonic() - start)

    def sample_once(self) -> None:
        import psutil

        for name, node, gen in self.alive():
            if node.proc.poll() is not None:
                with self.lock:
                    crashed = self.gen[name] == gen and name not in self.down
                    if crashed:
                        self.down.add(name)
                if crashed:
                    tail = node.log_path.read_text(errors="replace")[-600:]
                    self.figures.crashes.append(f"{name} exited with {node.proc.returncode}: {tail}")
                continue
            try:
                proc = psutil.Process(node.proc.pid)
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
            except psutil.Error:
                continue
            self.figures.rss.setdefault(name, []).append(rss)
            self.figures.disk.setdefault(name, []).append(_tree_bytes(node.home))

    def run(self) -> None:
        """The chaos phase: every loop on its own thread until `seconds` pass (or stop is set)."""
        opts = self.opts
        until = time.monotonic() + opts.seconds
        jitter = self.rng.uniform
        loops = [
            ("propose", lambda: self._loop(lambda: jitter(0.5, 1.5) * opts.plan_every_s, until, MAX_PLANS,
                                           self.propose_once)),
            ("kill", lambda: self._loop(lambda: jitter(0.5, 1.5) * opts.kill_every_s, until, MAX_KILLS,
                                        self.kill_once)),
            ("probe", lambda: self._loop(lambda: PROBE_EVERY_S, until, 10**6, self.probe_once)),
        ]
        attackers = [Attacker(f"hostile{i}", _identity(), self.world, random.Random(f"{opts.seed}-hostile{i}"),
                              source_ip=f"{HOSTILE_NET}{i + 1}") for i in range(opts.hostile)]
        for i, attacker in enumerate(attackers):
            rng = random.Random(f"{opts.seed}-choice{i}")
            loops.append((attacker.name, lambda a=attacker, r=rng: self.attack_loop(a, r, until)))
        threads = [threading.Thread(target=fn, name=f"chaos-{name}", daemon=True) for name, fn in loops]
        for t in threads:
            t.start()
        try:
            while time.monotonic() < until and not self.stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop.set()
            for attacker in attackers:
                attacker.stopping.set()
            for t in threads:
                t.join(THREAD_JOIN_S)
            for attacker in attackers:
                attacker.close()

    def sampler(self) -> tuple[threading.Event, threading.Thread]:
        """RSS and disk samples until the returned event is set (it runs through the drain too)."""
        done = threading.Event()

        def loop() -> None:
            while not done.wait(SAMPLE_EVERY_S):
                self.sample_once()

        thread = threading.Thread(target=loop, name="chaos-sampler", daemon=True)
        thread.start()
        return done, thread

    # ---- the end --------------------------------------------------------------------------------

    def drain(self) -> dict[str, dict[str, Any]]:
        """Every node up, then each honest plan's status (from its proposer) once all are final or
        the drain time is spent."""
        deadline = time.monotonic() + self.opts.drain_s
        docs: dict[str, dict[str, Any]] = {}
        while True:
            for pid, proposer in self.figures.plans:
                if pid not in docs or not docs[pid]["final"]:
                    doc = self._status(pid, proposer)
                    if doc is not None:
                        docs[pid] = doc
            if all(pid in docs and docs[pid]["final"] for pid, _ in self.figures.plans) \
                    or time.monotonic() >= deadline:
                return docs
            time.sleep(1.0)

    def _status(self, plan_id: str, proposer: str) -> dict[str, Any] | None:
        from node.plans.client import PlansClient

        order = [proposer, *[n for n in self.nodes if n != proposer]]
        for name in order:
            try:
                return PlansClient(self.nodes[name].addr).status(plan_id, executor_progress=False)
            except NodeError:
                continue
        return None

    def hostile_plan_leaks(self) -> list[str]:
        """Honest nodes on which a hostile plan got a commit, a result or an attestation."""
        from node.plans.client import PlansClient

        leaks = []
        for name, node in self.nodes.items():
            for pid in sorted(self.world.hostile_plans):
                try:
                    doc = PlansClient(node.addr).status(pid, executor_progress=False)
                except NodeError:
                    continue
                if doc["executor"] or doc["result"] or doc["attestations"]:
                    leaks.append(f"{name}: hostile plan {pid[:19]}… is {doc['state']} ({doc['reason']})")
        return leaks

    def store_checks(self) -> dict[str, str]:
        """`mergenet store check --json` on every honest home: "clean" or what is wrong."""
        out = {}
        for name, node in self.nodes.items():
            cmd = [sys.executable, "-m", "node.cli.main", "store", "check", "--json", "--home", str(node.home)]
            done = subprocess.run(cmd, cwd=REPO, env=self.cluster.env, capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT_S)
            try:
                report = json.loads(done.stdout)
            except ValueError:
                report = {}
            corrupt = report.get("corrupt", ["?"])
            out[name] = "clean" if done.returncode == 0 and not corrupt else \
                f"exit {done.returncode}: {done.stdout.strip()[:300] or done.stderr.strip()[-300:]}"
        return out


def _identity() -> Any:
    from registry.identity import Identity

    return Identity.generate()


def _network_info(addr: str) -> pb.NetworkInfo | None:
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as ch:
        try:
            return pb_grpc.RegistryStub(ch).GetNetworkInfo(pb.NetworkInfoRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError:
            return None


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:  # a temp file renamed meanwhile
                continue
    return total


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run_chaos(opts: ChaosOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Set up, run, drain, check, stop: the report (its `failures` empty when every invariant held)."""
    tmp = None
    if opts.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mergenet-chaos-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(opts.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    chaos = Chaos(opts, workdir, say)
    started = time.monotonic()
    strays: list[int] = []
    try:
        say(f"chaos: {opts.honest} honest + {opts.hostile} hostile nodes for {opts.seconds:g}s, seed {opts.seed}, "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        chaos.start()
        say(f"  {len(chaos.nodes)} nodes up, models submitted in {time.monotonic() - started:.1f}s")
        sampling, sampler = chaos.sampler()
        try:
            chaos.run()
            say(f"  chaos over: {len(chaos.figures.plans)} plans proposed, {sum(chaos.figures.attacks.values())} "
                f"attack messages, {len(chaos.figures.kills)} kills; draining")
            for name in sorted(chaos.down - {c.split()[0] for c in chaos.figures.crashes}):
                chaos.restart(name, chaos.nodes[name])
            docs = chaos.drain()
        finally:
            sampling.set()
            sampler.join(THREAD_JOIN_S)
        report = _report(chaos, docs)
        report["stores"] = chaos.store_checks()
        report["hostile_plan_leaks"] = chaos.hostile_plan_leaks()
    finally:
        chaos.stop.set()
        strays = chaos.cluster.stop()
        if tmp is not None:
            tmp.cleanup()
    report["stray_processes"] = len(strays)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["failures"] = _failures(report)
    return report


def _report(chaos: Chaos, docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    f = chaos.figures
    honest_keys = {n.key_id for n in chaos.nodes.values()}
    plans = []
    for pid, proposer in f.plans:
        doc = docs.get(pid)
        members = [doc["executor"]["key_id"], *[v["key_id"] for v in doc["verifiers"]]] \
            if doc and doc["executor"] else []
        plans.append({"plan_id": pid, "proposer": proposer, "state": doc["state"] if doc else "unknown",
                      "final": bool(doc and doc["final"]), "reason": doc["reason"] if doc else "no node answered",
                      "round": doc["round"] if doc else 0,
                      "strangers_chosen": [k for k in members if k not in honest_keys]})
    lat = f.latencies
    return {
        "options": {k: str(v) for k, v in vars(chaos.opts).items()},
        "plans": plans, "propose_errors": f.propose_errors, "kills": f.kills, "crashes": f.crashes,
        "latency_s": {"n": len(lat), "median": statistics.median(lat) if lat else 0.0,
                      "p99": _percentile(lat, 0.99), "max": max(lat, default=0.0),
                      "failures": f.probe_failures},
        "rss_mb": {n: _start_peak_end(v) for n, v in sorted(f.rss.items())},
        "disk_mb": {n: _start_peak_end(v) for n, v in sorted(f.disk.items())},
        "attacks": {a: dict(sorted((o, c) for (name, o), c in f.attacks.items() if name == a)) for a in ATTACKS},
        "sybils_chosen": sorted({k for p in plans for k in p["strangers_chosen"]}),
    }


def _start_peak_end(samples: list[int]) -> dict[str, float]:
    mb = [s / 2**20 for s in samples] or [0.0]
    return {"start": round(mb[0], 1), "peak": round(max(mb), 1), "end": round(mb[-1], 1)}


def _failures(r: dict[str, Any]) -> list[str]:
    """Every invariant that did not hold, in one sentence each."""
    out = []
    for p in r["plans"]:
        if not p["final"] or (p["state"] != "published" and not p["reason"]):
            out.append(f"plan {p['plan_id'][:19]}… by {p['proposer']} did not end: {p['state']} ({p['reason']})")
    if not any(p["state"] == "published" for p in r["plans"]):
        out.append("no honest plan was published")
    out += [f"store of {n} is not clean: {s}" for n, s in r["stores"].items() if s != "clean"]
    out += [f"crash: {c}" for c in r["crashes"]]
    out += [f"{n} RSS peaked at {v['peak']} MB > {RSS_BOUND_MB}" for n, v in r["rss_mb"].items()
            if v["peak"] > RSS_BOUND_MB]
    out += [f"{n} home peaked at {v['peak']} MB > {DISK_BOUND_MB}" for n, v in r["disk_mb"].items()
            if v["peak"] > DISK_BOUND_MB]
    lat = r["latency_s"]
    if lat["max"] > PROBE_BOUND_S:
        out.append(f"health took {lat['max']:.2f}s at worst (bound {PROBE_BOUND_S:g}s)")
    out += [f"health probe failed on {x}" for x in lat["failures"]]
    for attack, outcomes in r["attacks"].items():
        out += [f"attack {attack} was not refused: {o} ×{c}" for o, c in outcomes.items()
                if not outcome_expected(attack, o)]
    out += r["hostile_plan_leaks"]
    out += [f"Sybil key {k[:12]}… was chosen for an honest plan" for k in r["sybils_chosen"]]
    if r["stray_processes"]:
        out.append(f"{r['stray_processes']} processes outlived their node")
    return out


def print_report(r: dict[str, Any], say: Callable[[str], None] = print) -> None:
    states = Counter(p["state"] for p in r["plans"])
    say(f"\nplans: {len(r['plans'])} proposed — " + ", ".join(f"{s} {c}" for s, c in sorted(states.items()))
        + (f"; {len(r['propose_errors'])} proposals refused while their node was down" if r["propose_errors"] else ""))
    reasons = Counter(p["reason"] for p in r["plans"] if p["state"] != "published")
    for why, c in reasons.most_common():
        say(f"  {c}× {why}")
    say(f"kills: {len(r['kills'])} SIGKILL + restart ({', '.join(r['kills']) or 'none'})")
    say("stores: " + ", ".join(f"{n} {s}" for n, s in r["stores"].items()))
    lat = r["latency_s"]
    say(f"health latency under attack: median {lat['median'] * 1000:.1f} ms, p99 {lat['p99'] * 1000:.1f} ms, "
        f"max {lat['max'] * 1000:.1f} ms over {lat['n']} probes (target p99 < {PROBE_TARGET_S:g}s)")
    say("RSS MB (start/peak/end) and home MB (start/peak/end):")
    for n in r["rss_mb"]:
        m, d = r["rss_mb"][n], r["disk_mb"].get(n, {})
        say(f"  {n}: RSS {m['start']}/{m['peak']}/{m['end']}   home {d.get('start')}/{d.get('peak')}/{d.get('end')}")
    say("attacks (messages by outcome):")
    for attack, outcomes in r["attacks"].items():
        text = ", ".join(f"{o} {c}" for o, c in outcomes.items()) or "not drawn"
        say(f"  {attack:<24} {sum(outcomes.values()):>5}  {text}")
    say(f"hostile plans committed or merged on an honest node: {len(r['hostile_plan_leaks'])}; "
        f"Sybils chosen: {len(r['sybils_chosen'])}; stray processes: {r['stray_processes']}")
    say(f"done in {r['seconds']}s: " + ("all invariants held" if not r["failures"] else
                                          f"{len(r['failures'])} FAILED:\n  " + "\n  ".join(r["failures"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="chaos duration (default 300; 45 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a ~60-90 s run (shorter chaos, faster kills)")
    parser.add_argument("--dht", action="store_true", help="run the nodes with the DHT (default: gossip only)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep homes and logs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    opts = replace(ChaosOptions(seed=args.seed, dht=args.dht, workdir=args.workdir), **(QUICK if args.quick else {}))
    if args.seconds is not None:
        opts = replace(opts, seconds=args.seconds)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    report = run_chaos(opts)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
