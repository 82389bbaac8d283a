"""Helix's placement MILP, solved with HiGHS (highspy) and warm-started from the best heuristic.

Variables (Helix, section 4): per node an integer start layer s_i and binaries b_ik ("holds k
layers", k up to what fits in `weight_share` of its memory; none chosen = node unused); per link a
continuous flow f_uv and a binary switch d_uv. Constraints: f_uv <= cap_uv d_uv; inflow of a node
<= sum_k cap_i(k) b_ik; flow conservation; a source link needs s_i = 0, a sink link needs
e_i = s_i + sum_k k b_ik = L; a node-to-node link needs s_j = e_i (or, with partial inference,
s_j <= e_i < e_j). Objective: maximize the flow out of the source.
Additions of ours that keep every integer solution:
- Layer work, exactly: a node's inflow is split by layer count, x_ik <= cap_i(k) b_ik. Every unit of flow
  is a path through nodes whose layer counts add up to L (at least L with partial inference), so
  L F = sum_ik k x_ik (<= with partial inference). No node carries more than the whole flow:
  sum_k x_ik <= F. Without the second row the LP relaxation may buy a fast node's capacity by the
  fraction it uses (b_ik = F / cap_i(k)) and count all of it as layer work; with it, a node holding k
  layers adds at most k min(cap_i(k), F), which is what an integer placement can use of it.
- s_i <= s_j for interchangeable nodes i < j (same GPUs, region and links), which removes symmetric
  copies of each solution from the search.
The gap is reported against the least proven bound: HiGHS's dual bound, this model's LP relaxation, or
the layer-cover bound (`cover_bound.py`, a configuration LP with branching on node counts), which is far
tighter on real clusters (helix-24 / LLaMA-2-70B at a 3.3 s budget: LP 309, cover 279, best found 278.8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import highspy
import numpy as np

from cadence.plan.cluster import SINK, SOURCE, Cluster
from cadence.plan.cover_bound import cover_bound, layer_work_bound
from cadence.plan.placement import FlowSolution, Placement, max_flow
from cadence.plan.throughput import ThroughputModel


@dataclass(frozen=True)
class MilpConfig:
    """Solver knobs for the placement MILP."""

    time_limit_s: float = field(default=300.0, metadata={"help": "MILP time limit in seconds"})
    mip_gap: float = field(default=0.01, metadata={"help": "stop when the relative gap is below this"})
    partial_inference: bool = field(default=False, metadata={"help": "let a token enter a node mid-range"})
    prune_share: float = field(
        default=0.02, metadata={"help": "drop node-to-node links carrying less than this share of the flow bound"}
    )
    seed: int = field(default=0, metadata={"help": "HiGHS random seed"})
    threads: int = field(default=1, metadata={"help": "HiGHS threads"})
    verbose: bool = field(default=False, metadata={"help": "print the HiGHS log"})


@dataclass(frozen=True)
class MilpResult:
    placement: Placement
    flow: FlowSolution
    objective: float  # MILP incumbent (tokens/s)
    dual_bound: float  # the least proven upper bound: HiGHS's, the LP relaxation's, the cover bound's
    lp_bound: float  # LP relaxation of the same model
    gap: float  # (dual_bound - objective) / dual_bound
    status: str
    solve_s: float
    warm_start: str  # heuristic the solver started from
    warm_value: float
    num_vars: int
    num_binaries: int
    pruned_links: int
    moved: bool = True  # the MILP's placement differs from its warm start (up to swapping interchangeable nodes)
    cover_bound: float = float("inf")  # the configuration LP of layer covering (cover_bound.py)
    highs_bound: float = float("inf")  # HiGHS's own dual bound on this model
    returned: str = "milp"  # "milp", or the candidate the planner returned instead (it simulated better)


class _Model:
    """Columns and rows gathered in Python, handed to HiGHS once."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[tuple[float, float, dict[int, float]]] = []

    def var(self, lo: float, hi: float, integer: bool = False, cost: float = 0.0) -> int:
        self.cost.append(cost)
        self.lower.append(lo)
        self.upper.append(hi)
        self.integer.append(integer)
        return len(self.cost) - 1

    def row(self, lo: float, hi: float, coeffs: dict[int, float]) -> None:
        self.rows.append((lo, hi, coeffs))

    def to_highs(self, relax: bool) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(self.cost), len(self.rows)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_, lp.col_upper_ = np.array(self.lower), np.array(self.upper)
        lp.row_lower_ = np.array([r[0] for r in self.rows])
        lp.row_upper_ = np.array([r[1] for r in self.rows])
        # column-wise sparse matrix
        cols: list[list[tuple[int, float]]] = [[] for _ in self.cost]
        for r, (_, _, coeffs) in enumerate(self.rows):
            for c, v in coeffs.items():
                if v:
                    cols[c].append((r, v))
        starts, index, value = [0], [], []
        for entries in cols:
            for r, v in entries:
                index.append(r)
                value.append(v)
            starts.append(len(index))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = starts, index, value
        lp.sense_ = highspy.ObjSense.kMaximize
        if not relax:
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in self.integer]
        return lp


def interchangeable_groups(cluster: Cluster) -> list[list[str]]:
    """Nodes that could swap places without changing any capacity: same card, region and links."""
    by_kind: dict[tuple, list[str]] = {}
    for node in cluster.nodes:
        by_kind.setdefault((node.label, node.memory_gb, node.region), []).append(node.name)
    result = []
    for members in by_kind.values():
        inside = set(members)
        outside = [SOURCE, SINK, *(n for n in cluster.names if n not in inside)]
        within = {cluster.links.get((a, b)) for a in members for b in members if a != b}
        if len(within) > 1:
            continue  # per-link overrides inside the group: members are not interchangeable
        sigs: dict[tuple, list[str]] = {}
        for m in members:
            sig = tuple((cluster.links.get((m, o)), cluster.links.get((o, m))) for o in outside)
            sigs.setdefault(sig, []).append(m)
        result.extend(g for g in sigs.values() if len(g) > 1)
    return result


def canonical(placement: Placement, groups: list[list[str]]) -> Placement:
    """The same placement with ranges sorted by start inside each interchangeable group."""
    ranges = dict(placement.ranges)
    for members in groups:
        held = sorted(placement.ranges[m] for m in members if m in placement.ranges)
        for m in members:
            ranges.pop(m, None)
        # unused members first: they sit at start 0 in the MILP
        for m, rng in zip(members[len(members) - len(held):], held, strict=False):
            ranges[m] = rng
    return Placement(placement.method, ranges, placement.num_layers, placement.partial_inference)


def prune_links(cluster: Cluster, tm: ThroughputModel, share: float) -> tuple[list[tuple[str, str]], int]:
    """Links kept for the MILP: a node-to-node link carrying under `share` of the flow bound is dropped
    (it could only carry a sliver of the flow, and each link costs a binary)."""
    bound = layer_work_bound(cluster, tm)
    kept, dropped = [], 0
    for (a, b), link in cluster.links.items():
        if a not in (SOURCE,) and b not in (SINK,) and tm.link_capacity(a, b, link) < share * bound:
            dropped += 1
            continue
        kept.append((a, b))
    return kept, dropped


def solve_milp(cluster: Cluster, tm: ThroughputModel, warm: Placement, config: MilpConfig | None = None,
               cover: float | None = None) -> MilpResult:
    """Solve the placement MILP; `warm` (a heuristic placement) is the first incumbent. The gap is taken
    against the least of HiGHS's dual bound, the LP relaxation and `cover` (the layer-cover bound,
    computed here if not given): the compact model's LP relaxation is weak (a fast node counts its
    capacity at every layer it covers, up to the flow), the cover bound makes each layer pay for whole
    nodes."""
    cfg = config or MilpConfig()
    if cover is None:
        cover = cover_bound(cluster, tm)
    L = tm.model.num_layers
    partial = cfg.partial_inference
    nodes = [n for n in cluster.nodes if tm.max_layers(n) >= 1]
    names = {n.name for n in nodes}
    edges, dropped = prune_links(cluster, tm, cfg.prune_share)
    edges = [(a, b) for a, b in edges if (a in names or a == SOURCE) and (b in names or b == SINK)]
    groups = [[m for m in g if m in names] for g in interchangeable_groups(cluster)]

    m = _Model()
    start = {n.name: m.var(0, L - 1, integer=True) for n in nodes}
    hold: dict[str, dict[int, int]] = {n.name: {} for n in nodes}
    cap_max: dict[str, float] = {}
    for n in nodes:
        for k in range(1, tm.max_layers(n) + 1):
            if tm.capacity(n, k) > 0:
                hold[n.name][k] = m.var(0, 1, integer=True)
        cap_max[n.name] = max((tm.capacity(n, k) for k in hold[n.name]), default=0.0)
    flow, switch = {}, {}
    for a, b in edges:
        c = tm.link_capacity(a, b, cluster.links[(a, b)])
        c = min(c, *(cap_max[x] for x in (a, b) if x in cap_max))
        flow[(a, b)] = m.var(0, c, cost=1.0 if a == SOURCE else 0.0)
        switch[(a, b)] = m.var(0, 1, integer=True)
        m.row(-np.inf, 0, {flow[(a, b)]: 1, switch[(a, b)]: -c})

    def end_coeffs(name: str, sign: float = 1.0) -> dict[int, float]:
        coeffs = {start[name]: sign}
        coeffs.update({v: sign * k for k, v in hold[name].items()})
        return coeffs

    total = {flow[e]: 1.0 for e in flow if e[0] == SOURCE}  # F, the objective
    through: dict[str, dict[int, int]] = {}  # x_ik: node i's inflow while it holds k layers
    for n in nodes:
        i = n.name
        m.row(-np.inf, 1, {v: 1 for v in hold[i].values()})  # at most one layer count
        m.row(-np.inf, L, end_coeffs(i))  # ends inside the model
        through[i] = {k: m.var(0, tm.capacity(n, k)) for k in hold[i]}
        for k, x in through[i].items():
            m.row(-np.inf, 0, {x: 1.0, hold[i][k]: -tm.capacity(n, k)})
        inflow = {flow[e]: 1.0 for e in flow if e[1] == i}
        outflow = {flow[e]: 1.0 for e in flow if e[0] == i}
        m.row(0, 0, {**inflow, **{x: -1.0 for x in through[i].values()}})
        m.row(-np.inf, 0, {**{x: 1.0 for x in through[i].values()}, **{v: -1.0 for v in total}})
        cons = dict(inflow)
        for v in outflow:
            cons[v] = cons.get(v, 0.0) - 1.0
        m.row(0, 0, cons)
    for (a, b), d in switch.items():
        if a == SOURCE:
            m.row(-np.inf, L, {start[b]: 1, d: L})  # d => s_b = 0
        elif b == SINK:
            coeffs = end_coeffs(a)
            coeffs[d] = -L
            m.row(0, np.inf, coeffs)  # d => e_a = L
        else:
            ahead = end_coeffs(a, -1.0)
            ahead[start[b]] = 1.0
            ahead[d] = L
            m.row(-np.inf, L, ahead)  # d => s_b <= e_a
            if partial:
                behind = end_coeffs(a)
                for key, v in end_coeffs(b, -1.0).items():
                    behind[key] = behind.get(key, 0.0) + v
                behind[d] = L + 1
                m.row(-np.inf, L, behind)  # d => e_a < e_b
            else:
                behind = end_coeffs(a)
                behind[start[b]] = -1.0
                behind[d] = L
                m.row(-np.inf, L, behind)  # d => e_a <= s_b
    # a link is switched on only between nodes that hold layers
    for (a, b), d in switch.items():
        for x in (a, b):
            if x in hold:
                m.row(-np.inf, 0, {d: 1, **{v: -1 for v in hold[x].values()}})
    work = {v: float(L) for v in total}
    for i in through:
        work.update({x: -float(k) for k, x in through[i].items()})
    m.row(-np.inf if partial else 0, 0, work)  # L F = (<=) layer work done
    for g in groups:
        for x, y in zip(g, g[1:], strict=False):
            m.row(-np.inf, 0, {start[x]: 1, start[y]: -1})

    # warm start: the heuristic placement, symmetry-sorted, with its own max flow
    # nodes whose layer count serves nothing under this table (e.g. beyond the latency budget) drop out
    usable = {n: r for n, r in warm.ranges.items() if n in hold and r[1] - r[0] in hold[n]}
    warm = canonical(Placement(warm.method, usable, L, partial), groups)
    warm_flow = max_flow(cluster, warm, tm)
    x0 = np.zeros(len(m.cost))
    for i in start:
        s, e = warm.ranges.get(i, (0, 0))
        x0[start[i]] = s
        if e > s:
            x0[hold[i][e - s]] = 1
    for e, v in warm_flow.edges.items():
        if e in flow:
            x0[flow[e]] = min(v, m.upper[flow[e]])
            x0[switch[e]] = 1
    for i, xs in through.items():
        s, e = warm.ranges.get(i, (0, 0))
        if e > s:
            x0[xs[e - s]] = sum(x0[flow[f]] for f in flow if f[1] == i)

    def highs(relax: bool) -> highspy.Highs:
        # HiGHS keeps one thread scheduler a process, sized by the first solve: another thread count
        # (the cover bound's LPs run on one) fails unless it is reset
        highspy.Highs.resetGlobalScheduler(True)
        h = highspy.Highs()
        h.setOptionValue("output_flag", cfg.verbose)
        h.setOptionValue("random_seed", cfg.seed)
        h.setOptionValue("threads", cfg.threads)
        h.passModel(m.to_highs(relax))
        return h

    t0 = time.perf_counter()
    relax = highs(True)
    relax.run()
    lp_bound = relax.getInfo().objective_function_value
    h = highs(False)
    h.setOptionValue("time_limit", max(1.0, cfg.time_limit_s - (time.perf_counter() - t0)))
    h.setOptionValue("mip_rel_gap", cfg.mip_gap)
    sol = highspy.HighsSolution()
    sol.col_value = list(x0)
    sol.value_valid = True
    h.setSolution(sol)
    h.run()
    solve_s = time.perf_counter() - t0
    info = h.getInfo()
    status = h.modelStatusToString(h.getModelStatus())
    values = np.array(h.getSolution().col_value) if info.primal_solution_status else x0
    ranges: dict[str, tuple[int, int]] = {}
    for i in start:
        k = next((k for k, v in hold[i].items() if values[v] > 0.5), 0)
        if k:
            s = int(round(values[start[i]]))
            ranges[i] = (s, s + k)
    placement = Placement("helix-milp", ranges, L, partial)
    result_flow = max_flow(cluster, placement, tm)
    switched = {e for e, d in switch.items() if values[d] > 0.5}
    on_switched = max_flow(cluster, placement, tm, switched)
    if on_switched.value > result_flow.value:  # the flow on the MILP's own switched links
        result_flow = on_switched
    if result_flow.value < warm_flow.value:  # never return worse than the start
        placement, result_flow = Placement("helix-milp", warm.ranges, L, partial), warm_flow
    objective = max(info.objective_function_value if info.primal_solution_status else 0.0, result_flow.value)
    highs_dual = info.mip_dual_bound if np.isfinite(info.mip_dual_bound) else lp_bound
    dual = max(min(highs_dual, lp_bound, cover), objective)
    return MilpResult(
        placement=placement, flow=result_flow, objective=result_flow.value, dual_bound=dual, lp_bound=lp_bound,
        gap=(dual - objective) / dual if dual > 0 else 0.0, status=status, solve_s=solve_s,
        warm_start=warm.method, warm_value=warm_flow.value, num_vars=len(m.cost),
        num_binaries=sum(m.integer) - len(start), pruned_links=dropped,
        moved=canonical(placement, groups).ranges != warm.ranges, cover_bound=cover, highs_bound=highs_dual,
    )
