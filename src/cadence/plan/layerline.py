"""An aggregated model of the same placement problem, along the layer line: a fast warm start and a bound.

Interchangeable nodes (same card, memory, region) are counted, not named: n[g,s,k] nodes of group g
hold layers s..s+k-1 and carry f[g,s,k] <= cap_g(k) n[g,s,k]. At every layer boundary p, the flow of
segments ending at p equals the flow of segments starting at p, split into group-to-group transfers
z[g,h,p] bounded by what the g-h links can carry. Every node-level solution of the Helix MILP maps
onto this model (without partial inference), so its optimum is an upper bound for the Helix MILP; and
when links do not bind (one region) it is exact. It has no big-M rows, so its LP relaxation is tight
and HiGHS solves it in seconds, where the node-level MILP struggles with symmetry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from cadence.plan.cluster import SINK, SOURCE, Cluster, Node
from cadence.plan.milp import _Model, layer_work_bound
from cadence.plan.placement import Placement
from cadence.plan.throughput import ThroughputModel


@dataclass(frozen=True)
class LayerLineResult:
    placement: Placement
    objective: float
    bound: float  # HiGHS dual bound of this model: an upper bound for any placement
    lp_bound: float
    solve_s: float


def _groups(cluster: Cluster, tm: ThroughputModel) -> dict[tuple, list[Node]]:
    groups: dict[tuple, list[Node]] = {}
    for node in cluster.nodes:
        if tm.max_layers(node) >= 1:
            groups.setdefault((node.label, node.memory_gb, node.region), []).append(node)
    return groups


def solve_layer_line(cluster: Cluster, tm: ThroughputModel, time_limit_s: float = 60.0,
                     mip_gap: float = 1e-3, verbose: bool = False) -> LayerLineResult:
    L = tm.model.num_layers
    groups = list(_groups(cluster, tm).values())
    big = layer_work_bound(cluster, tm)

    def link_cap(a: list[Node] | str, b: list[Node] | str) -> float:
        """Best link between the two groups (or the coordinator), in tokens/s; an upper bound."""
        ea = [a] if isinstance(a, str) else [n.name for n in a]
        eb = [b] if isinstance(b, str) else [n.name for n in b]
        caps = [tm.link_capacity(x, y, cluster.links[(x, y)]) for x in ea for y in eb if (x, y) in cluster.links]
        return max(caps, default=0.0)

    m = _Model()
    count: dict[tuple[int, int, int], int] = {}
    flow: dict[tuple[int, int, int], int] = {}
    for g, nodes in enumerate(groups):
        for k in range(1, tm.max_layers(nodes[0]) + 1):
            cap = tm.capacity(nodes[0], k)
            if cap <= 0:
                continue
            for s in range(0, L - k + 1):
                count[(g, s, k)] = m.var(0, len(nodes), integer=True)
                flow[(g, s, k)] = m.var(0, cap * len(nodes), cost=1.0 if s == 0 else 0.0)
                m.row(-np.inf, 0, {flow[(g, s, k)]: 1, count[(g, s, k)]: -cap})
        m.row(-np.inf, len(nodes), {v: 1 for (gg, _, _), v in count.items() if gg == g})
        for s, end in ((0, None), (None, L)):  # coordinator links
            c = link_cap(SOURCE, nodes) if s == 0 else link_cap(nodes, SINK)
            if c < big:
                keys = [key for key in flow if key[0] == g and (key[1] == 0 if s == 0 else key[1] + key[2] == end)]
                row = {flow[key]: 1.0 for key in keys}
                row.update({count[key]: -c for key in keys})
                m.row(-np.inf, 0, row)
    for p in range(1, L):
        z = {}
        for g in range(len(groups)):
            for h in range(len(groups)):
                c = link_cap(groups[g], groups[h])
                if c <= 0:
                    continue
                z[(g, h)] = m.var(0, np.inf)
                if c < big:
                    ends = [count[key] for key in count if key[0] == g and key[1] + key[2] == p]
                    starts = [count[key] for key in count if key[0] == h and key[1] == p]
                    m.row(-np.inf, 0, {z[(g, h)]: 1, **{v: -c * len(groups[h]) for v in ends}})
                    m.row(-np.inf, 0, {z[(g, h)]: 1, **{v: -c * len(groups[g]) for v in starts}})
        for g in range(len(groups)):
            out = {flow[key]: 1.0 for key in flow if key[0] == g and key[1] + key[2] == p}
            out.update({v: -1.0 for (a, _), v in z.items() if a == g})
            m.row(0, 0, out)
            inn = {flow[key]: 1.0 for key in flow if key[0] == g and key[1] == p}
            inn.update({v: -1.0 for (_, b), v in z.items() if b == g})
            m.row(0, 0, inn)
    # layer-work cut, as in the node-level model
    cut = {flow[key]: float(L) for key in flow if key[1] == 0}
    cut.update({v: -key[2] * tm.capacity(groups[key[0]][0], key[2]) for key, v in count.items()})
    m.row(-np.inf, 0, cut)

    t0 = time.perf_counter()
    lp = highspy.Highs()
    lp.setOptionValue("output_flag", False)
    lp.passModel(m.to_highs(relax=True))
    lp.run()
    lp_bound = lp.getInfo().objective_function_value
    h = highspy.Highs()
    h.setOptionValue("output_flag", verbose)
    h.setOptionValue("time_limit", time_limit_s)
    h.setOptionValue("mip_rel_gap", mip_gap)
    h.passModel(m.to_highs(relax=False))
    h.run()
    info = h.getInfo()
    values = np.array(h.getSolution().col_value) if info.primal_solution_status else np.zeros(len(m.cost))
    ranges: dict[str, tuple[int, int]] = {}
    free = [list(nodes) for nodes in groups]
    for (g, s, k), v in sorted(count.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        for _ in range(int(round(values[v]))):
            ranges[free[g].pop(0).name] = (s, s + k)
    bound = info.mip_dual_bound if np.isfinite(info.mip_dual_bound) else lp_bound
    return LayerLineResult(
        placement=Placement("layer-line", ranges, L),
        objective=info.objective_function_value if info.primal_solution_status else 0.0,
        bound=min(bound, lp_bound), lp_bound=lp_bound, solve_s=time.perf_counter() - t0,
    )
