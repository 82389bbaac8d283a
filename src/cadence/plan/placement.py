"""A placement (contiguous layer range per node) and the flow network it induces."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from cadence.plan.cluster import SINK, SOURCE, Cluster
from cadence.plan.throughput import ThroughputModel

SCALE = 1000.0  # max-flow runs on integers (milli-tokens/s) so float round-off cannot stall it


@dataclass(frozen=True)
class Placement:
    """`ranges[node] = (start, end)`: the node holds layers start..end-1; unused nodes are absent."""

    method: str
    ranges: dict[str, tuple[int, int]] = field(hash=False)
    num_layers: int = 0
    partial_inference: bool = False
    # node -> pipeline group; when set, tokens never cross groups (separate pipelines)
    groups: dict[str, str] | None = field(default=None, hash=False)

    def layers(self, node: str) -> int:
        s, e = self.ranges.get(node, (0, 0))
        return e - s

    def covers_model(self) -> bool:
        covered = set()
        for s, e in self.ranges.values():
            covered.update(range(s, e))
        return len(covered) == self.num_layers


def can_follow(a: tuple[int, int], b: tuple[int, int], partial: bool) -> bool:
    """May a token leaving a node with range `a` continue on a node with range `b`?"""
    if partial:
        return b[0] <= a[1] < b[1]
    return b[0] == a[1]


@dataclass(frozen=True)
class FlowSolution:
    """Max-flow value (decode tokens/s) and the flow on each used edge (SOURCE/SINK included)."""

    value: float
    edges: dict[tuple[str, str], float] = field(hash=False)

    def through(self, node: str) -> float:
        return sum(f for (a, _), f in self.edges.items() if a == node)


def flow_graph(cluster: Cluster, placement: Placement, tm: ThroughputModel,
               edges: set[tuple[str, str]] | None = None) -> nx.DiGraph:
    """Graph with each node split in `n/in` -> `n/out` (capacity = node capacity for its layer count)."""
    g = nx.DiGraph()
    g.add_node(SOURCE)
    g.add_node(SINK)
    L = placement.num_layers
    for node in cluster.nodes:
        rng = placement.ranges.get(node.name)
        if rng is None or rng[1] <= rng[0]:
            continue
        cap = tm.capacity(node, rng[1] - rng[0])
        g.add_edge(f"{node.name}/in", f"{node.name}/out", capacity=int(cap * SCALE))
    for (a, b), link in cluster.links.items():
        if a == SOURCE:
            ok = b in placement.ranges and placement.ranges[b][0] == 0
        elif b == SINK:
            ok = a in placement.ranges and placement.ranges[a][1] == L
        else:
            ok = (a in placement.ranges and b in placement.ranges
                  and can_follow(placement.ranges[a], placement.ranges[b], placement.partial_inference)
                  and (placement.groups is None or placement.groups[a] == placement.groups[b]))
        if ok and (edges is None or (a, b) in edges):
            u = SOURCE if a == SOURCE else f"{a}/out"
            v = SINK if b == SINK else f"{b}/in"
            g.add_edge(u, v, capacity=int(tm.link_capacity(a, b, link) * SCALE))
    return g


def _solve(g: nx.DiGraph) -> FlowSolution:
    value, flows = nx.maximum_flow(g, SOURCE, SINK)
    edges: dict[tuple[str, str], float] = {}
    for u, targets in flows.items():
        for v, f in targets.items():
            if f <= 0 or u.endswith("/in"):
                continue
            edges[(u.removesuffix("/out"), v.removesuffix("/in"))] = f / SCALE
    return FlowSolution(value=value / SCALE, edges=edges)


def max_flow(cluster: Cluster, placement: Placement, tm: ThroughputModel,
             edges: set[tuple[str, str]] | None = None) -> FlowSolution:
    """Max flow of the placement (only over `edges` if given). Under a latency budget every node's
    capacity already fits its layer-proportional share of the round trip, so any route fits."""
    return _solve(flow_graph(cluster, placement, tm, edges))


def balanced_flow(cluster: Cluster, placement: Placement, tm: ThroughputModel,
                  edges: set[tuple[str, str]] | None = None, segments: int = 32) -> FlowSolution:
    """A max flow that loads nodes evenly: the same value, at least cost when each node's capacity is
    cut into `segments` equal slices and the j-th slice costs j (so every node fills its first slice
    before any fills its second). A plain max-flow solution may leave a node with slack idle or full
    arbitrarily; IWRR follows the flow, so it would too."""
    g = flow_graph(cluster, placement, tm, edges)
    for u, v in [(u, v) for u, v in g.edges if u.endswith("/in")]:
        cap = g.edges[u, v]["capacity"]
        g.remove_edge(u, v)
        for j in range(segments):
            mid = f"{u}#{j}"
            piece = cap // segments + (1 if j < cap % segments else 0)
            g.add_edge(u, mid, capacity=piece, weight=j)
            g.add_edge(mid, v, capacity=piece, weight=0)
    flows = nx.max_flow_min_cost(g, SOURCE, SINK)
    result: dict[tuple[str, str], float] = {}
    for u, targets in flows.items():
        if u.endswith("/in") or "#" in u:
            continue
        for v, f in targets.items():
            if f > 0:
                result[(u.removesuffix("/out"), v.removesuffix("/in"))] = f / SCALE
    value = sum(f for (a, _), f in result.items() if a == SOURCE)
    return FlowSolution(value=value, edges=result)
