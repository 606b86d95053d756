"""Simulation: what one merge plan costs the network at 16 … 100,000 nodes, today and redesigned.

    python benchmarks/scale_sim.py [--sizes 16,100,1000,10000,100000] [--statement-kb 1.5]

Where benchmarks/swarm.py cannot go (a machine runs a few dozen nodes), this counts messages.
Three designs, per plan:

- flood (today, node/plans/transport.py): every node forwards each statement it has not seen
  to every good peer except its sender; peers are everyone the node learned (gossip + DHT), at
  most MAX_PEERS; every node bids, so a plan has BASE_STATEMENTS + N statements. Simulated on a
  random graph of that degree (exact duplicate suppression) up to --flood-max nodes, and counted
  in closed form (each node sends each statement degree − 1 times) above it.
- gossip: the same statements pushed to FANOUT random peers by each node that sees them first
  (an epidemic): simulated, it reports rounds until every node has it and the share reached.
- keyed: the plan is stored in the DHT under each input model's key (hivemind's get/store cost
  ~log2 N hops), read only by the nodes that hold an input or volunteer (INTERESTED), and bids
  are capped by a lottery on (plan id, key) to BID_CAP expected bidders; statements go only to
  the interested nodes.

Figures are messages and bytes sent per node per plan (mean and max) and the total. The
statement size default is what swarm.py measured (≈1.5 kB of canonical JSON each).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys

MAX_PEERS = 1024  # node/network/peers.py: the peer table's bound
BASE_STATEMENTS = 5  # plan, commit, result, two attestations (swarm.py: 9 at N=4, 11 at N=6 → 5 + N)
FANOUT = 6  # gossip: peers each node pushes a new statement to
INTERESTED = 16  # keyed: holders of the inputs plus volunteers that read the plan's key
BID_CAP = 16  # keyed: expected bidders chosen by the lottery
FLOOD_SIM_MAX = 2000


def flood(n: int, rng: random.Random, simulate: bool) -> tuple[list[int], int]:
    """(messages sent per node for one statement, hops until all have it) under flooding."""
    degree = min(n - 1, MAX_PEERS)
    if not simulate:  # closed form: each node forwards once to all peers but its sender
        per = [degree] + [max(0, degree - 1)] * (n - 1)
        return per, math.ceil(math.log(n, max(2, degree))) if n > 1 else 0
    peers = [rng.sample([j for j in range(n) if j != i], degree) if degree < n - 1 else
             [j for j in range(n) if j != i] for i in range(n)]
    sent = [0] * n
    seen = {0}
    frontier = [(0, -1)]
    hops = 0
    while frontier:
        nxt = []
        for node, sender in frontier:
            for p in peers[node]:
                if p == sender:
                    continue
                sent[node] += 1
                if p not in seen:
                    seen.add(p)
                    nxt.append((p, node))
        frontier = nxt
        hops += bool(nxt)
    return sent, hops


def gossip(n: int, rng: random.Random) -> tuple[list[int], int, float]:
    """(messages per node, rounds, share reached) for a push epidemic with FANOUT."""
    sent = [0] * n
    seen = bytearray(n)
    seen[0] = 1
    frontier = [0]
    rounds = 0
    while frontier:
        nxt = []
        for node in frontier:
            for _ in range(min(FANOUT, n - 1)):
                p = rng.randrange(n - 1)
                p += p >= node  # any node but itself
                sent[node] += 1
                if not seen[p]:
                    seen[p] = 1
                    nxt.append(p)
        frontier = nxt
        rounds += bool(nxt)
    return sent, rounds, sum(seen) / n


def keyed(n: int, inputs: int = 3) -> tuple[float, float, int]:
    """(mean messages per node, max per node, total) with DHT-keyed plans and capped bids."""
    hops = max(1, math.ceil(math.log2(n)))
    interested = min(n, INTERESTED)
    statements = BASE_STATEMENTS + min(n, BID_CAP)
    store = inputs * hops  # proposer stores the plan under each input's key
    reads = interested * inputs * hops  # each interested node looks the keys up
    direct = statements * interested  # statements go straight to the interested nodes
    total = store + reads + direct
    busiest = store + statements * interested  # the proposer: stores, and sends to all interested
    return total / n, busiest, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,100,1000,10000,100000")
    ap.add_argument("--statement-kb", type=float, default=1.5)
    ap.add_argument("--flood-max", type=int, default=FLOOD_SIM_MAX, help="simulate flooding up to this many nodes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kb = args.statement_kb
    print(f"per plan; statement {kb} kB; flood degree min(N−1, {MAX_PEERS}); gossip fan-out {FANOUT}; keyed: "
          f"{INTERESTED} interested nodes, ≤{BID_CAP} bids\n")
    print(f"{'N':>7} | {'flood stmts':>11} {'msgs/node':>10} {'MB/node':>8} {'total GB':>9} {'hops':>4} | "
          f"{'gossip msgs/node':>16} {'MB/node':>8} {'rounds':>6} {'reached':>7} | "
          f"{'keyed msgs/node':>15} {'busiest':>7} {'total':>7}")
    for n in (int(x) for x in args.sizes.split(",")):
        stmts = BASE_STATEMENTS + n
        per, hops = flood(n, rng, simulate=n <= args.flood_max)
        f_msgs = statistics.mean(per) * stmts
        f_total_gb = sum(per) * stmts * kb / 1e6
        g_per, rounds, reached = gossip(n, rng)
        g_msgs = statistics.mean(g_per) * stmts
        k_mean, k_busy, k_total = keyed(n)
        print(f"{n:>7} | {stmts:>11} {f_msgs:>10.0f} {f_msgs * kb / 1e3:>8.1f} {f_total_gb:>9.2f} {hops:>4} | "
              f"{g_msgs:>16.0f} {g_msgs * kb / 1e3:>8.2f} {rounds:>6} {reached:>7.4f} | "
              f"{k_mean:>15.2f} {k_busy:>7.0f} {k_total:>7}")
    print("\nflood: per-node cost grows as N² (N bids × N peers) until the peer table caps the degree, then as "
          "N; gossip: N statements × fan-out; keyed: independent of N but for the log2 N DHT hops.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
