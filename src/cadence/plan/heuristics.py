"""Baseline placements the MILP is compared with (and warm-started from).

- Swarm-style (Ryabinin et al., 2023): the model is cut into equal stages small enough for the
  smallest node; each node, strongest first, joins the stage whose total throughput is lowest.
- Petals-style (Borzunov et al., 2023): each node holds as many layers as its memory allows and,
  in join order, covers the span whose weakest layer has the least throughput so far; tokens may
  enter a server mid-range (partial inference), as Petals clients chain servers.
- Separate pipelines: nodes of one type form their own pipelines (as many nodes per pipeline as
  maximizes that type's total throughput); no mixing of types, no flow between pipelines.
"""

from __future__ import annotations

import math

from cadence.plan.cluster import Cluster, Node
from cadence.plan.placement import Placement
from cadence.plan.throughput import ThroughputModel


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """`total` layers cut into `parts` contiguous ranges whose sizes differ by at most one."""
    bounds = [round(i * total / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def swarm_placement(cluster: Cluster, tm: ThroughputModel) -> Placement:
    L = tm.model.num_layers
    usable = [n for n in cluster.nodes if tm.max_layers(n) >= 1]
    stage_size = min(tm.max_layers(n) for n in usable)
    stages = _split(L, math.ceil(L / stage_size))
    load = [0.0] * len(stages)
    ranges: dict[str, tuple[int, int]] = {}
    for node in sorted(usable, key=lambda n: -tm.capacity(n, stage_size)):
        i = min(range(len(stages)), key=lambda s: (load[s], s))
        s, e = stages[i]
        ranges[node.name] = (s, e)
        load[i] += tm.capacity(node, e - s)
    return Placement("swarm", ranges, L)


def petals_placement(cluster: Cluster, tm: ThroughputModel) -> Placement:
    L = tm.model.num_layers
    coverage = [0.0] * L
    ranges: dict[str, tuple[int, int]] = {}
    for node in cluster.nodes:
        k = tm.max_layers(node)
        cap = tm.capacity(node, k)
        if k < 1 or cap <= 0:
            continue
        best = min(range(L - k + 1), key=lambda s: (min(coverage[s : s + k]), sum(coverage[s : s + k]), s))
        ranges[node.name] = (best, best + k)
        for layer in range(best, best + k):
            coverage[layer] += cap
    return Placement("petals", ranges, L, partial_inference=True)


def _best_pipelines(nodes: list[Node], tm: ThroughputModel) -> tuple[int, int, float]:
    """(nodes per pipeline, pipelines, total throughput) maximizing throughput for one node type."""
    L = tm.model.num_layers
    best = (0, 0, 0.0)
    for depth in range(1, len(nodes) + 1):
        widest = math.ceil(L / depth)
        cap = tm.capacity(nodes[0], widest)
        count = len(nodes) // depth
        if cap > 0 and count * cap > best[2]:
            best = (depth, count, count * cap)
    return best


def separate_pipelines(cluster: Cluster, tm: ThroughputModel) -> Placement:
    L = tm.model.num_layers
    groups: dict[str, list[Node]] = {}
    for node in cluster.nodes:
        groups.setdefault(f"{node.label}@{node.region}", []).append(node)
    ranges: dict[str, tuple[int, int]] = {}
    pipeline_of: dict[str, str] = {}
    for group, nodes in groups.items():
        depth, count, _ = _best_pipelines(nodes, tm)
        stages = _split(L, depth) if depth else []
        for p in range(count):
            for j, rng in enumerate(stages):
                name = nodes[p * depth + j].name
                ranges[name] = rng
                pipeline_of[name] = f"{group}#{p}"
    return Placement("separate", ranges, L, groups=pipeline_of)




def _chains(cluster: Cluster, tm: ThroughputModel, chains: int, per_chain: float) -> dict[str, tuple[int, int]] | None:
    """`chains` pipelines mixing node types, each node holding as many layers as still serve `per_chain`."""
    L = tm.model.num_layers
    sizes = {}
    for node in cluster.nodes:
        ks = [k for k in range(1, tm.max_layers(node) + 1) if tm.capacity(node, k) >= per_chain]
        if ks:
            sizes[node.name] = max(ks)
    if sum(sizes.values()) < chains * L:
        return None
    # fill chains strongest (most layers) first, each node to the chain with the fewest layers so far
    filled = [0] * chains
    members: list[list[tuple[str, int]]] = [[] for _ in range(chains)]
    for name, k in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        c = min(range(chains), key=lambda i: (filled[i], i))
        if filled[c] >= L:
            break
        take = min(k, L - filled[c])
        members[c].append((name, take))
        filled[c] += take
    if min(filled) < L:
        return None
    ranges: dict[str, tuple[int, int]] = {}
    for chain in members:
        pos = 0
        for name, k in chain:
            ranges[name] = (pos, pos + k)
            pos += k
    return ranges


def mixed_chains(cluster: Cluster, tm: ThroughputModel) -> Placement:
    """Our warm-start heuristic: c parallel pipelines of mixed node types, each carrying the largest
    per-pipeline flow phi such that the nodes, each holding the most layers it serves at phi, cover c x L.
    Built over the whole cluster and, separately, inside each region (slow links between regions);
    the better one by max flow is kept."""
    from cadence.plan.placement import max_flow

    L = tm.model.num_layers
    whole = Placement("mixed-chains", _mixed_chain_ranges(cluster, tm), L)
    regional: dict[str, tuple[int, int]] = {}
    for region in sorted({n.region for n in cluster.nodes}):
        sub = Cluster(cluster.name, tuple(n for n in cluster.nodes if n.region == region), cluster.links,
                      cluster.coordinator_region)
        regional.update(_mixed_chain_ranges(sub, tm))
    split = Placement("mixed-chains", regional, L)
    return max((whole, split), key=lambda p: max_flow(cluster, p, tm).value)


def _mixed_chain_ranges(cluster: Cluster, tm: ThroughputModel) -> dict[str, tuple[int, int]]:
    best: tuple[float, dict[str, tuple[int, int]]] = (0.0, {})
    top = max((tm.capacity(n, 1) for n in cluster.nodes), default=0.0)
    for chains in range(1, len(cluster.nodes) + 1):
        lo, hi, found = 0.0, top, None
        for _ in range(30):
            mid = (lo + hi) / 2
            ranges = _chains(cluster, tm, chains, mid)
            if ranges is None:
                hi = mid
            else:
                lo, found = mid, ranges
        if found is None:
            break
        if chains * lo > best[0]:
            best = (chains * lo, found)
    return best[1]


BASELINES = {"swarm": swarm_placement, "petals": petals_placement, "separate": separate_pipelines}
