"""`mergenet demo`: the whole story on a real local network, narrated.

    summary = run_demo(DemoOptions(workdir=None), say=print)   # say() gets one line at a time

1. generate a tiny base model and two experts (fixed seeds);
2. start three nodes on 127.0.0.1 (alpha, then beta and gamma joining through alpha);
3. alpha submits the base and expert 1 (policy open); beta submits expert 2 (policy consent);
4. gamma proposes a TIES plan: beta consents, the nodes bid, gamma commits an executor and two
   verifiers, the executor merges, the verifiers recompute a seeded share of tensors and attest;
5. gamma pulls the published model and verifies its signature and every file;
6. optionally evaluates base, experts and merged model on held-out text;
7. stops every node; no process outlives the demo, also on Ctrl-C.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.demo.cluster import LocalCluster, NodeProc
from node.errors import NodeError
from node.network.client import operator_metadata
from node.plans.client import PlansClient
from node.plans.model import VerificationPolicy

PLAN_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path | None = None
    arch: str = "llama"
    dht: bool = True
    evaluate: bool = False
    seed: int = 11


def _short(key: str) -> str:
    return key.removeprefix("sha256:")[:12]


class _Narrator:
    """Turns successive status documents into story lines, each event told once."""

    def __init__(self, say: Callable[[str], None], names: dict[str, str]) -> None:
        self.say, self.names, self.told = say, names, set()

    def who(self, key: str | None) -> str:
        return self.names.get(key or "", _short(key or "?"))

    def tell(self, key: str, text: str) -> None:
        if key not in self.told:
            self.told.add(key)
            self.say(text)

    def update(self, d: dict[str, Any]) -> None:
        for c in d["consents"]:
            if c["accept"] is not None:
                verdict = "accepts" if c["accept"] else f"refuses ({c['reason']})"
                self.tell(f"consent{c['model_id']}", f"  consent    {self.who(c['publisher'])} {verdict} the use of "
                                                      f"its model {_short(c['model_id'])} (policy consent)")
        for b in d["bids"]:
            self.tell(f"bid{b['key_id']}", f"  bid        {self.who(b['key_id'])} offers to execute "
                                           f"({b['device']}, {b['memory_bytes'] / 2**30:.1f} GiB free, "
                                           f"score {b['score']})")
        if d["executor"]:
            vs = " and ".join(self.who(v["key_id"]) for v in d["verifiers"])
            self.tell("commit", f"  commit     the rule picks {self.who(d['executor']['key_id'])} to merge, "
                                f"{vs} to verify")
        if d["result"]:
            r = d["result"]
            self.tell("result", f"  merged     {self.who(d['executor']['key_id'])} merged on {r['device']} in "
                                f"{r['seconds']:.1f}s → {r['model_id'] or 'error: ' + r['error']}")
        for a in d["attestations"]:
            verdict = "PASS" if a["passed"] else "FAIL"
            self.tell(f"att{a['verifier']}", f"  attest     {self.who(a['verifier'])}: {verdict}, recomputed "
                                             f"{a['tensors_checked']} tensors, max |diff| {a['max_abs_diff']:.2g}")
        if d["final"]:
            self.tell("final", f"  {d['state']:<10} {d['reason']}")


def _wait_plan(addr: str, plan_id: str, narrator: _Narrator, timeout: float) -> dict[str, Any]:
    return PlansClient(addr).wait(plan_id, timeout, on_update=narrator.update)


def _propose(node: NodeProc, recipe: dict[str, Any]) -> str:
    """Propose as the node's operator: the demo shares each node's home, so it holds its token."""
    client = PlansClient(node.addr, operator_metadata(node.home))
    return client.propose(recipe, VerificationPolicy(verifiers=2, spot_check=0.25, tolerance=1e-4), ttl_s=600)


def _trust(home: Path, key_ids: list[str]) -> None:
    from registry.home import Home
    from registry.trust import TrustList

    trust = TrustList(Home(home).ensure().trust_path)
    for key_id in key_ids:
        trust.add(key_id)


def _evaluate(folders: dict[str, Path], seed: int) -> dict[str, float]:
    """Mean next-token loss of each model on held-out synthetic text (lower is better)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from node.demo.models import synthetic_corpus

    text = synthetic_corpus(64, seed=seed + 1000)
    losses = {}
    for name, folder in folders.items():
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        total = 0.0
        with torch.no_grad():
            for line in text:
                ids = tok(line, return_tensors="pt").input_ids
                total += float(model(ids, labels=ids).loss)
        losses[name] = round(total / len(text), 4)
    return losses


def run_demo(opts: DemoOptions, say: Callable[[str], None]) -> dict[str, Any]:
    start = time.monotonic()
    if opts.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mergenet-demo-")
        workdir = Path(tmp.name)
    else:
        tmp, workdir = None, Path(opts.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _story(opts, workdir, say, start)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _story(opts: DemoOptions, workdir: Path, say: Callable[[str], None], start: float) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from node.demo.models import make_family
    from node.transfer.pull import pull
    from registry.local import LocalRegistry

    hf_logging.disable_progress_bar()  # the story is the progress report
    say(f"1. generating a tiny {opts.arch} base model and two experts in {workdir}")
    base_dir, (exp1_dir, exp2_dir) = make_family(workdir / "models", arch=opts.arch, n_experts=2, seed=opts.seed)
    summary: dict[str, Any] = {"workdir": str(workdir), "arch": opts.arch, "dht": opts.dht}
    cluster = LocalCluster(workdir, dht=opts.dht)
    try:
        say(f"2. starting three nodes on 127.0.0.1 (DHT {'on' if opts.dht else 'off'})")
        alpha = cluster.start("alpha")
        beta, gamma = cluster.start_many(["beta", "gamma"], peers=[alpha.addr])
        nodes = [alpha, beta, gamma]
        names = {n.key_id: n.name for n in nodes}
        for n in nodes:
            say(f"   {n.name:<6} {n.addr}  key {n.key_id[:12]}")
        summary["nodes"] = [{"name": n.name, "addr": n.addr, "key_id": n.key_id} for n in nodes]
        for n in nodes:  # the demo's three operators know each other: attestations are counted by trust
            _trust(n.home, [m.key_id for m in nodes if m is not n])

        say("3. submitting signed models")
        base = alpha.submit(base_dir, license="MIT", policy="open", name="demo-base")
        exp1 = alpha.submit(exp1_dir, base=base, license="MIT", policy="open", name="demo-expert-1")
        exp2 = beta.submit(exp2_dir, base=base, license="Apache-2.0", policy="consent", name="demo-expert-2")
        say(f"   alpha  base      {base}  (MIT, open)")
        say(f"   alpha  expert-1  {exp1}  (MIT, open)")
        say(f"   beta   expert-2  {exp2}  (Apache-2.0, consent)")
        summary["models"] = {"base": base, "expert1": exp1, "expert2": exp2}

        recipe = {"merge_method": "ties", "base_model": base, "dtype": "float32",
                  "parameters": {"normalize": True},
                  "models": [{"model": exp1, "parameters": {"weight": 0.5, "density": 0.6}},
                             {"model": exp2, "parameters": {"weight": 0.5, "density": 0.6}}]}
        plan_id = _propose(gamma, recipe)
        say(f"4. gamma proposes a TIES merge of expert-1 and expert-2: plan {plan_id}")
        doc = _wait_plan(gamma.addr, plan_id, _Narrator(say, names), PLAN_TIMEOUT_S)
        summary["plan"] = {k: doc[k] for k in ("plan_id", "state", "reason", "license", "executor", "verifiers",
                                                "attestations", "result", "consents")}
        if doc["state"] != "published":
            raise NodeError(f"plan {plan_id} ended {doc['state']}: {doc['reason']}")

        merged = doc["result"]["model_id"]
        out = workdir / "pulled" / "merged"
        result = pull(merged, gamma.home, out, sources=[doc["executor"]["address"]],
                      require_attestations=doc["attestations_needed"])
        registry = LocalRegistry(gamma.home)
        try:
            verified = registry.verify(out)
            attestations = len(registry.attestation_tally(merged).trusted)
        finally:
            registry.close()
        role = "executed" if doc["executor"]["key_id"] == gamma.key_id else "verified"
        origin = f"its own store (it {role} the merge)" if result.sources == ("local",) else ", ".join(result.sources)
        say(f"5. gamma pulled {merged} from {origin} into {out}: signature by "
            f"{names.get(verified.signer, verified.signer[:12])} and all {len(verified.files)} files verified; "
            f"{attestations} attestations from keys it trusts")
        summary["merged"] = {"model_id": merged, "path": str(out), "verified": verified.id == merged,
                             "signer": verified.signer, "attestations_indexed": attestations}
        if opts.evaluate:
            losses = _evaluate({"base": base_dir, "expert1": exp1_dir, "expert2": exp2_dir, "merged": out},
                               opts.seed)
            say("6. held-out loss: " + ", ".join(f"{k} {v}" for k, v in losses.items()))
            summary["eval_loss"] = losses
    finally:
        say("stopping the nodes")
        strays = cluster.stop()
    summary["stray_processes"] = len(strays)
    summary["seconds"] = round(time.monotonic() - start, 1)
    say(f"done in {summary['seconds']}s; {len(strays)} stray processes")
    return summary
