"""Stage-structured placements of largest max flow, found within their family by bisection and small IPs.

The layer line is cut into stages; a stage's layers are served by parallel chains, each chain a run of
nodes of one type splitting the stage evenly (a chain's capacity is its slowest node's), and every
chain of a stage may hand its tokens to every chain of the next. Swarm's placement (one node a chain),
separate pipelines (one stage of long chains) and the lane placements are all of this form. With links
that carry any flow, such a placement's max flow is the least stage capacity (the sum of its chains').

For a target flow F, "does some stage structure reach F with the nodes there are?" is an integer program
over (stage length, node counts per type) columns whose chains carry F; the order of stages does not
matter to the flow. Bisection on F finds the largest F it answers yes for. This is the Helix MILP's
objective restricted to that family (mixed-type chains and uneven splits are not in it), found in
seconds where HiGHS's own heuristics stay at their start; the MILP starts from it.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from cadence.plan.cluster import Cluster, Node
from cadence.plan.cover_bound import layer_work_bound
from cadence.plan.lanes import node_types
from cadence.plan.placement import Placement
from cadence.plan.throughput import ThroughputModel

Usage = tuple[int, ...]


class StageTables:
    """Per type and stage length: the best capacity of parallel chains using at most u nodes, and how."""

    def __init__(self, types: list[list[Node]], tm: ThroughputModel) -> None:
        self.types = types
        self.counts = tuple(len(t) for t in types)
        L = tm.model.num_layers
        # best[g][span][u] = capacity of the best set of chains of type g over `span` layers with <= u nodes
        # how[g][span][u] = the chain depths that reach it
        self.best: list[list[list[float]]] = []
        self.how: list[list[list[tuple[int, ...]]]] = []
        for nodes in types:
            node, n = nodes[0], len(nodes)
            top = tm.max_layers(node)
            cap = [0.0] + [tm.capacity(node, k) if tm.resident(node, k) >= 1 else 0.0 for k in range(1, top + 1)]
            best_g, how_g = [[0.0] * (n + 1)], [[()] * (n + 1)]
            for span in range(1, L + 1):
                chain = [0.0] * (n + 1)  # chain[m]: capacity of one chain of depth m
                for m in range(1, n + 1):
                    hi, lo = -(-span // m), span // m
                    if lo >= 1 and hi <= top:
                        chain[m] = min(cap[hi], cap[lo])
                value, ways = [0.0] * (n + 1), [()] * (n + 1)
                for u in range(1, n + 1):
                    value[u], ways[u] = value[u - 1], ways[u - 1]
                    for m in range(1, u + 1):
                        if chain[m] > 0 and value[u - m] + chain[m] > value[u] + 1e-9:
                            value[u], ways[u] = value[u - m] + chain[m], (*ways[u - m], m)
                best_g.append(value)
                how_g.append(ways)
            self.best.append(best_g)
            self.how.append(how_g)

    def options(self, span: int, need: float) -> list[Usage]:
        """Node counts per type, none of them reducible, whose chains over `span` layers carry `need`."""
        out: list[Usage] = []
        n_types = len(self.types)
        tail = [0.0] * (n_types + 1)
        for g in range(n_types - 1, -1, -1):
            tail[g] = tail[g + 1] + self.best[g][span][self.counts[g]]

        def walk(g: int, left: float, used: list[int]) -> None:
            if left <= 1e-9:
                out.append(tuple(used) + (0,) * (n_types - len(used)))
                return
            if g == n_types or tail[g] < left - 1e-9:
                return
            row = self.best[g][span]
            for u in range(self.counts[g] + 1):
                if u and row[u] <= row[u - 1] + 1e-9:
                    continue  # one more node adds nothing
                walk(g + 1, left - row[u], [*used, u])
                if row[u] >= left - 1e-9:
                    break  # more nodes of this type would not be minimal
        walk(0, need, [])
        return out


def feasible(tables: StageTables, num_layers: int, flow: float, per_span: int = 60,
             time_limit_s: float = 10.0) -> list[tuple[int, Usage]] | None:
    """Stages (span, node counts per type) reaching `flow` with the nodes there are, or None.

    The stages' order does not change the max flow, so this is a small integer program: how many stages
    of each (span, option) to use, spans adding up to L, node counts within the cluster's. Each span
    keeps its `per_span` options that use the least layer work (each node counted at its type's most)."""
    weight = [max(k * tables.best[g][k][1] for k in range(1, num_layers + 1)) for g in range(len(tables.types))]
    columns: list[tuple[int, Usage]] = []
    for span in range(1, num_layers + 1):
        opts = sorted(tables.options(span, flow), key=lambda o: sum(u * w for u, w in zip(o, weight, strict=True)))
        columns += [(span, o) for o in opts[:per_span]]
    if not columns:
        return None
    n_types = len(tables.types)
    a = np.zeros((n_types + 1, len(columns)))
    for j, (span, opt) in enumerate(columns):
        a[0, j] = span
        a[1:, j] = opt
    lower = np.concatenate([[num_layers], np.zeros(n_types)])
    upper = np.concatenate([[num_layers], np.array(tables.counts, dtype=float)])
    res = milp(np.array([sum(o) for _, o in columns], dtype=float), constraints=LinearConstraint(a, lower, upper),
               integrality=np.ones(len(columns)), bounds=Bounds(0, np.inf),
               options={"time_limit": time_limit_s})
    if res.x is None:
        return None
    stages = []
    for j, z in enumerate(res.x):
        stages += [columns[j]] * int(round(z))
    # fastest types first (they carry the first layers, as in the lane placements)
    stages.sort(key=lambda st: min((g for g, u in enumerate(st[1]) if u), default=n_types))
    return stages


def build(tables: StageTables, num_layers: int, stages: list[tuple[int, Usage]]) -> Placement:
    """The placement of stages in order: each type's chains take that type's next unused nodes."""
    ranges: dict[str, tuple[int, int]] = {}
    taken = [0] * len(tables.types)
    start = 0
    for span, usage in stages:
        for g, u in enumerate(usage):
            if not u:
                continue
            for depth in tables.how[g][span][u]:
                cuts = [start + round(i * span / depth) for i in range(depth + 1)]
                for j in range(depth):
                    ranges[tables.types[g][taken[g]].name] = (cuts[j], cuts[j + 1])
                    taken[g] += 1
        start += span
    return Placement("stages", ranges, num_layers)


def stage_placement(cluster: Cluster, tm: ThroughputModel, time_limit_s: float = 60.0, rel_tol: float = 2e-3,
                    upper: float | None = None) -> tuple[Placement, float] | None:
    """The stage-structured placement of largest max flow (by bisection on the flow, within `rel_tol`,
    below `upper` if a bound is known), and that flow as the stage model counts it (links not counted);
    None if no structure carries any."""
    types = node_types(cluster, tm)
    if not types:
        return None
    tables = StageTables(types, tm)
    L = tm.model.num_layers
    hi = upper if upper is not None else layer_work_bound(cluster, tm)
    lo, best = 0.0, None
    deadline = time.perf_counter() + time_limit_s
    mid = hi * (1 - rel_tol)  # try the bound first: often it is met
    while hi - lo > rel_tol * max(hi, 1e-9) and time.perf_counter() < deadline:
        stages = feasible(tables, L, mid, time_limit_s=max(1.0, min(10.0, deadline - time.perf_counter())))
        if stages is None:
            hi = mid
        else:
            lo, best = mid, stages
        mid = (lo + hi) / 2 if best is not None else max(lo + (hi - lo) * 0.9, hi * 0.5)
    if best is None:
        return None
    return build(tables, L, best), lo
