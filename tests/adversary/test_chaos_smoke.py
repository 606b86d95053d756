"""benchmarks/chaos.py's core loop, CI-sized: 3 honest nodes (real `mergenet node start`
subprocesses) and 1 hostile peer for ~20 s of attacks, SIGKILLs and restarts; every invariant
the benchmark asserts must hold (plans end with a reason and at least one is published, stores
clean, no crash, bounded RSS and disk, health answering, every attack refused, no hostile plan
committed, no Sybil chosen, no stray process)."""

from __future__ import annotations

import pytest

from benchmarks.chaos import ChaosOptions, run_chaos

pytestmark = pytest.mark.timeout(150)


def test_chaos_smoke(tmp_path):
    opts = ChaosOptions(seconds=20.0, seed=3, honest=3, hostile=1, verifiers=1, plan_every_s=5.0,
                        kill_every_s=12.0, down_s=(1.0, 3.0), drain_s=40.0, workdir=tmp_path)
    report = run_chaos(opts, say=lambda line: None)
    assert not report["failures"], "\n".join(report["failures"])
    assert any(p["state"] == "published" for p in report["plans"]) and report["kills"]
    drawn = [a for a, outcomes in report["attacks"].items() if outcomes]
    assert len(drawn) >= 10, drawn
