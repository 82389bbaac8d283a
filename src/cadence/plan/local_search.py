"""Local search over placements, scored by exact max flow: the warm start the MILP improves on.

HiGHS's own primal heuristics rarely improve a placement MILP (its LP relaxation is weak: fractional
layer counts), so, like Helix's warm start from heuristics, we hand it a good incumbent: hill climbing
with plateau moves from the best baseline, moving one node at a time (resize, shift, align with
another node's boundary, drop, add), keeping any move that does not lower the max flow.
"""

from __future__ import annotations

import random
import time

from cadence.plan.cluster import Cluster
from cadence.plan.placement import Placement, max_flow
from cadence.plan.throughput import ThroughputModel


def _good_sizes(cluster: Cluster, tm: ThroughputModel, keep: float = 0.8) -> dict[str, list[int]]:
    """Per node, the layer counts whose layer-work (k x capacity) is within `keep` of its best."""
    sizes = {}
    for node in cluster.nodes:
        work = {k: k * tm.capacity(node, k) for k in range(1, tm.max_layers(node) + 1)}
        best = max(work.values(), default=0.0)
        sizes[node.name] = [k for k, w in work.items() if best > 0 and w >= keep * best]
    return sizes


def improve(cluster: Cluster, tm: ThroughputModel, start: Placement, time_limit_s: float = 20.0,
            seed: int = 0) -> Placement:
    rng = random.Random(seed)
    L = tm.model.num_layers
    sizes = _good_sizes(cluster, tm)
    names = [n for n in cluster.names if sizes[n]]
    ranges = dict(start.ranges)
    best = current = max_flow(cluster, Placement("search", ranges, L, start.partial_inference), tm).value
    best_ranges = dict(ranges)
    deadline = time.perf_counter() + time_limit_s
    while time.perf_counter() < deadline and names:
        trial = dict(ranges)
        node = rng.choice(names)
        move = rng.random()
        used = [n for n in trial if n != node]
        if move < 0.1 and node in trial:
            del trial[node]
        elif move < 0.55 and used:
            other = trial[rng.choice(used)]
            k = rng.choice(sizes[node])
            if rng.random() < 0.5 and other[1] + k <= L:
                trial[node] = (other[1], other[1] + k)  # continue where another node ends
            elif other[0] - k >= 0:
                trial[node] = (other[0] - k, other[0])  # end where another node starts
            else:
                continue
        else:
            k = rng.choice(sizes[node])
            s = trial.get(node, (rng.randrange(L - k + 1), 0))[0]
            if rng.random() < 0.5:
                s = rng.randrange(L - k + 1)
            trial[node] = (min(s, L - k), min(s, L - k) + k)
        value = max_flow(cluster, Placement("search", trial, L, start.partial_inference), tm).value
        if value >= current:
            ranges, current = trial, value
            if value > best:
                best, best_ranges = value, dict(trial)
    return Placement("local-search", best_ranges, L, start.partial_inference)
