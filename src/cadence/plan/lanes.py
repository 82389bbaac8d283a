"""Lane-built placements: pipelines of one node type each, in stages from the fastest type to the slowest.

The layer line is cut into stages; each stage is served by parallel lanes (chains of nodes of one type
splitting the stage's layers evenly), and any lane of a stage may hand its tokens to any lane of the
next. Fast types go first, so a few fast nodes with room for KV carry the early layers for every
request and slow nodes run the rest side by side, e.g. four A100s in a chain, then two L4 lanes and
two T4 lanes in parallel. A lane structure is a type order cut into stages, the stage bounds and a
lane depth per type; the structures are searched by coordinate descent under the placement capacity
model (`capacity.placement_capacity`), routing requests across a stage's lanes in proportion to their
compute-bound capacity (the balanced flow would do the same, at a hundred times the cost).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from cadence.plan.capacity import placement_capacity
from cadence.plan.cluster import SINK, SOURCE, Cluster, Node
from cadence.plan.placement import FlowSolution, Placement
from cadence.plan.throughput import ThroughputModel


@dataclass(frozen=True)
class LaneLayout:
    """`stages[s]` = the node groups (indices into the type list) serving stage s; `bounds` the layer cuts
    (len(stages) + 1 of them, 0 first, L last); `depth[g]` the nodes per lane of group g."""

    stages: tuple[tuple[int, ...], ...]
    bounds: tuple[int, ...]
    depth: tuple[int, ...] = field(default=())


def node_types(cluster: Cluster, tm: ThroughputModel) -> list[list[Node]]:
    """Interchangeable nodes (card, memory, region), fastest first by the most layer work one node does."""
    groups: dict[tuple, list[Node]] = {}
    for n in cluster.nodes:
        if tm.max_layers(n) >= 1:
            groups.setdefault((n.label, n.memory_gb, n.region), []).append(n)

    def work(n: Node) -> float:
        return max(k * tm.compute_capacity(n, k) for k in range(1, tm.max_layers(n) + 1))

    return sorted(groups.values(), key=lambda g: (-work(g[0]), g[0].name))


def _split(start: int, end: int, parts: int) -> list[tuple[int, int]]:
    b = [start + round(i * (end - start) / parts) for i in range(parts + 1)]
    return [(b[i], b[i + 1]) for i in range(parts)]


def build(types: list[list[Node]], tm: ThroughputModel, layout: LaneLayout) -> tuple[Placement, FlowSolution] | None:
    """The placement of `layout` and its routing flow (None if a lane's node cannot hold its share)."""
    L = tm.model.num_layers
    ranges: dict[str, tuple[int, int]] = {}
    stage_lanes: list[list[tuple[list[str], float]]] = []  # per stage: (lane's nodes, lane capacity)
    for s, groups in enumerate(layout.stages):
        lo, hi = layout.bounds[s], layout.bounds[s + 1]
        lanes = []
        for g in groups:
            d = layout.depth[g]
            nodes = types[g]
            for lane in range(len(nodes) // d):
                members = nodes[lane * d:(lane + 1) * d]
                cuts = _split(lo, hi, d)
                if any(not 1 <= e - b <= tm.max_layers(n) or tm.resident(n, e - b) < 1
                       for n, (b, e) in zip(members, cuts, strict=True)):
                    return None
                ranges.update({n.name: r for n, r in zip(members, cuts, strict=True)})
                lanes.append(([n.name for n in members], min(tm.compute_capacity(n, e - b)
                                                              for n, (b, e) in zip(members, cuts, strict=True))))
        if not lanes:
            return None
        stage_lanes.append(lanes)
    edges: dict[tuple[str, str], float] = {}
    prev = [(SOURCE, 1.0)]
    for lanes in stage_lanes:
        total = sum(cap for _, cap in lanes)
        nxt = []
        for members, cap in lanes:
            w = cap / total
            for a, wa in prev:
                edges[(a, members[0])] = edges.get((a, members[0]), 0.0) + wa * w
            for a, b in zip(members, members[1:], strict=False):
                edges[(a, b)] = w
            nxt.append((members[-1], w))
        prev = nxt
    for a, wa in prev:
        edges[(a, SINK)] = wa
    return Placement("lanes", ranges, L), FlowSolution(1.0, edges)


def _compositions(n: int, most: int) -> list[list[list[int]]]:
    """Ways to cut types 0..n-1 (in order) into at most `most` consecutive stages."""
    out = []
    for cuts in range(min(most, n)):
        for chosen in _choose(list(range(1, n)), cuts):
            b = [0, *chosen, n]
            out.append([list(range(b[i], b[i + 1])) for i in range(len(b) - 1)])
    return out


def _choose(items: list[int], k: int) -> list[list[int]]:
    if k == 0:
        return [[]]
    return [[items[i], *rest] for i in range(len(items)) for rest in _choose(items[i + 1:], k - 1)]


def lane_search(cluster: Cluster, tm: ThroughputModel, time_limit_s: float = 60.0, most_stages: int = 3,
                keep: int = 4) -> list[tuple[float, Placement, FlowSolution]]:
    """Lane structures by coordinate descent under the placement capacity model; the `keep` best
    (score, placement, routing flow) found, best first. Types may also be left out (slowest first)."""
    types = node_types(cluster, tm)
    L = tm.model.num_layers
    deadline = time.perf_counter() + time_limit_s
    cache: dict[LaneLayout, float] = {}
    found: dict[tuple, tuple[float, Placement, FlowSolution]] = {}

    def score(layout: LaneLayout) -> float:
        if layout in cache:
            return cache[layout]
        built = build(types, tm, layout)
        value = 0.0
        if built is not None:
            cap = placement_capacity(cluster, tm, built[0], routing=built[1])
            value = cap.throughput
            if value > 0:
                key = tuple(sorted(built[0].ranges.items()))
                found[key] = (value, built[0], cap.flow)
        cache[layout] = value
        return value

    def fewest(g: int, span: int) -> int:
        return max(1, math.ceil(span / tm.max_layers(types[g][0])))

    step = max(1, L // 40)

    def descend(layout: LaneLayout) -> None:
        """Coordinate descent from `layout`: move one stage bound or one type's lane depth at a time."""
        stages, best = layout.stages, score(layout)
        improved = True
        while improved and time.perf_counter() < deadline:
            improved = False
            moves: list[LaneLayout] = []
            for i in range(1, len(layout.bounds) - 1):
                for d in (-4 * step, -step, step, 4 * step):
                    b = list(layout.bounds)
                    b[i] += d
                    if b[i - 1] < b[i] < b[i + 1]:
                        dd = list(layout.depth)
                        for s, st in enumerate(stages):  # a longer stage may need deeper lanes
                            for g in st:
                                dd[g] = min(len(types[g]), max(dd[g], fewest(g, b[s + 1] - b[s])))
                        moves.append(LaneLayout(stages, tuple(b), tuple(dd)))
            for st in stages:
                for g in st:
                    # one node deeper or shallower, or any depth that splits the type into whole lanes
                    # (from 2 lanes of 4 to 1 of 8 the depths between leave nodes out: a valley)
                    n = len(types[g])
                    for depth in sorted({layout.depth[g] - 1, layout.depth[g] + 1,
                                         *(n // lanes for lanes in range(1, n + 1) if n % lanes == 0)}):
                        if 1 <= depth <= n and depth != layout.depth[g]:
                            dd = list(layout.depth)
                            dd[g] = depth
                            moves.append(LaneLayout(stages, layout.bounds, tuple(dd)))
            for move in moves:
                v = score(move)
                if v > best:
                    best, layout, improved = v, move, True
                if time.perf_counter() > deadline:
                    break

    used_sets = [list(range(n)) for n in range(len(types), 0, -1)]
    for used in used_sets:
        for comp in _compositions(len(used), most_stages):
            if time.perf_counter() > deadline:
                break
            stages = tuple(tuple(used[i] for i in stage) for stage in comp)
            # first bounds: each stage's share of the layers by its types' layer work
            work = [sum(len(types[g]) * max(k * tm.compute_capacity(types[g][0], k)
                                            for k in range(1, tm.max_layers(types[g][0]) + 1)) for g in st)
                    for st in stages]
            acc = [0.0]
            for w in work:
                acc.append(acc[-1] + w)
            bounds = [0, *(max(1, min(L - 1, round(L * a / acc[-1]))) for a in acc[1:-1]), L]
            if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
                continue
            # two starts: the shallowest lanes that hold each stage (the most lanes) and one lane per type
            # (the most KV per request); descents from either end stop in different optima
            shallow = [1] * len(types)
            for s, st in enumerate(stages):
                for g in st:
                    shallow[g] = min(len(types[g]), fewest(g, bounds[s + 1] - bounds[s]))
            for depth in (shallow, [len(t) for t in types]):
                descend(LaneLayout(stages, tuple(bounds), tuple(depth)))
    ranked = sorted(found.values(), key=lambda t: -t[0])
    return ranked[:keep]
