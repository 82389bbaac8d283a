"""An upper bound on any placement's max flow: every layer must be covered by enough capacity.

Whatever the placement, every token passes every layer l on some node holding l, and a node holding k
layers passes at most capacity(k) tokens/s, so the nodes holding l have capacities adding up to at least
the flow F. A node holding k layers covers k layers. So F is reachable only if the nodes' layer
counts can be chosen and their "layer slots" (k per node) dealt to the L layers so that each layer's
slots add up to F: a covering problem. Its configuration LP (a pattern = the slots one layer gets,
y_p = how many layers get pattern p, n_tk = how many nodes of type t hold k layers, all fractional):

    max  sum_p y_p
    s.t. sum_p a_p,tk y_p <= k n_tk          (slots of kind (t, k) dealt at most as held)
         sum_k n_tk <= N_t                   (nodes of type t)

has optimum >= L whenever F is reachable, so the least F where it falls below L bounds every placement,
with or without partial inference and whatever the links. Patterns are generated as needed (column
generation; pricing is a covering knapsack over capacities rounded up, which keeps it a relaxation,
with no more copies of a kind in a pattern than there may be nodes of it); branch and bound on the node
counts n_tk (whole nodes, patterns still fractional) tightens it just below the LP's answer; F is found
by bisection. The compact MILP's LP relaxation lets a fast node count its capacity at
every layer it covers up to the flow, fractional layer counts included; the patterns make a layer pay
for whole nodes, which is what separates the two (70B on helix-24: 309 against about 280).
"""

from __future__ import annotations

import math
import time

import highspy
import numpy as np

from cadence.plan.cluster import Cluster
from cadence.plan.lanes import node_types
from cadence.plan.throughput import ThroughputModel

GRID = 2000  # capacity units a pattern's knapsack counts in (items' capacities rounded up to them)


def layer_work_bound(cluster: Cluster, tm: ThroughputModel) -> float:
    """Upper bound on any placement's throughput: every token passes all L layers."""
    work = 0.0
    for node in cluster.nodes:
        work += max((k * tm.capacity(node, k) for k in range(1, tm.max_layers(node) + 1)), default=0.0)
    return work / tm.model.num_layers


class _CoverLP:
    """The configuration LP at one flow in HiGHS, patterns added as columns and kept across solves
    (branching changes only the bounds on the node counts n_tk and which patterns they allow)."""

    def __init__(self, items: list[tuple[int, int, float]], counts: list[int], flow: float, num_layers: int) -> None:
        self.items, self.counts, self.L = items, counts, num_layers
        unit = flow / GRID
        # capacities rounded up to whole units: a pattern that really reaches the flow still does
        self.weight = np.array([min(GRID, math.ceil(c / unit - 1e-9)) for _, _, c in items], dtype=np.int64)
        n_items = len(items)
        h = self.h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        # columns 0..n_items-1: n_tk; rows: one per item (slots dealt <= k n_tk), one per type (nodes)
        h.addVars(n_items, np.zeros(n_items), np.array([float(counts[t]) for t, _, _ in items]))
        h.changeObjectiveSense(highspy.ObjSense.kMaximize)
        starts, index, value = [], [], []
        for i, (_, k, _) in enumerate(items):
            starts.append(len(index))
            index.append(i)
            value.append(-float(k))
        for t in range(len(counts)):
            starts.append(len(index))
            for i, (ti, _, _) in enumerate(items):
                if ti == t:
                    index.append(i)
                    value.append(1.0)
        h.addRows(n_items + len(counts), np.full(n_items + len(counts), -highspy.kHighsInf),
                  np.concatenate([np.zeros(n_items), np.array(counts, dtype=float)]), len(index),
                  np.array(starts, dtype=np.int32), np.array(index, dtype=np.int32), np.array(value))
        self.patterns: list[np.ndarray] = []
        self.seen: set[tuple[float, ...]] = set()
        for i, w in enumerate(self.weight):  # a pattern of copies of one item each
            if w > 0:
                p = np.zeros(n_items)
                p[i] = math.ceil(GRID / w)
                self._add(p)

    def _add(self, p: np.ndarray) -> None:
        rows = np.flatnonzero(p).astype(np.int32)
        self.h.addCol(1.0, 0.0, highspy.kHighsInf, len(rows), rows, p[rows])
        self.patterns.append(p)
        self.seen.add(tuple(p))

    def solve(self, n_lo: np.ndarray, n_hi: np.ndarray, max_rounds: int = 2000) -> tuple[float, np.ndarray]:
        """Column generation to the LP optimum (or until it covers every layer): (layers covered, n);
        covered is infinite if it did not converge within `max_rounds` (so nothing is ruled out)."""
        n_items, h = len(self.items), self.h
        h.changeColsBounds(n_items, np.arange(n_items, dtype=np.int32), n_lo.astype(float), n_hi.astype(float))
        # a layer holds at most as many slots of a kind as there may be nodes of that kind
        cap = np.floor(n_hi + 1e-9)
        if self.patterns:
            allowed = np.all(np.array(self.patterns) <= cap, axis=1)
            h.changeColsBounds(len(self.patterns), np.arange(n_items, n_items + len(self.patterns), dtype=np.int32),
                               np.zeros(len(self.patterns)), np.where(allowed, highspy.kHighsInf, 0.0))
        n = n_lo
        for _ in range(max_rounds):
            h.run()
            status = h.getModelStatus()
            if status == highspy.HighsModelStatus.kInfeasible:  # the bounds on n leave no solution
                return 0.0, n_lo
            if status != highspy.HighsModelStatus.kOptimal:
                raise RuntimeError(f"cover bound LP failed: {h.modelStatusToString(status)}")
            sol = h.getSolution()
            covered = h.getInfo().objective_function_value
            n = np.array(sol.col_value[:n_items])
            if covered >= self.L - 1e-7:
                return covered, n
            duals = np.maximum(np.array(sol.row_dual[:n_items]), 0.0)  # price of a slot of each kind
            # pricing: the cheapest pattern reaching the flow, at most `cap` copies of each kind (a 0/1
            # knapsack over copies); a column helps if it costs under 1
            cost = np.full(GRID + 1, np.inf)
            cost[0] = 0.0
            index = np.arange(GRID + 1)
            steps: list[tuple[int, np.ndarray]] = []
            for i in range(n_items):
                w = int(self.weight[i])
                for _ in range(int(min(cap[i], math.ceil(GRID / w))) if w > 0 else 0):
                    taken = cost[np.maximum(index - w, 0)] + duals[i]
                    take = taken < cost
                    cost = np.where(take, taken, cost)
                    steps.append((i, take))
            if cost[GRID] >= 1.0 - 1e-6:
                return covered, n  # the LP optimum
            p = np.zeros(n_items)
            c = GRID
            for i, take in reversed(steps):
                if c > 0 and take[c]:
                    p[i] += 1
                    c = max(0, c - int(self.weight[i]))
            if tuple(p) in self.seen:
                return covered, n  # priced again: optimal within the LP's tolerances
            self._add(p)
        return float("inf"), n  # not converged: nothing is ruled out


def _reachable(items: list[tuple[int, int, float]], counts: list[int], flow: float, num_layers: int,
               node_limit: int = 200, deadline: float = math.inf) -> bool:
    """False only if no whole numbers of nodes per (type, layer count) let the configuration LP cover every
    layer at `flow` (branch and bound on the node counts; patterns stay fractional). True when it cannot
    rule `flow` out within `node_limit` LPs or by `deadline`, which keeps the bound valid."""
    lp = _CoverLP(items, counts, flow, num_layers)
    top = np.array([float(counts[t]) for t, _, _ in items])
    stack = [(np.zeros(len(items)), top)]
    solved = 0
    while stack:
        lo, hi = stack.pop()
        solved += 1
        if solved > node_limit or time.perf_counter() > deadline:
            return True
        covered, n = lp.solve(lo, hi)
        if covered < num_layers - 1e-7:
            continue
        frac = np.abs(n - np.round(n))
        i = int(np.argmax(frac))
        if frac[i] <= 1e-6:
            return True
        down_hi, up_lo = hi.copy(), lo.copy()
        down_hi[i], up_lo[i] = math.floor(n[i]), math.ceil(n[i])
        stack += [(lo, down_hi), (up_lo, hi)]
    return False


def cover_bound(cluster: Cluster, tm: ThroughputModel, rel_tol: float = 1e-3, time_limit_s: float = 30.0,
                upper: float | None = None) -> float:
    """The least flow (within `rel_tol`, rounded up) that no placement of the model on the cluster
    reaches under this capacity table; after `time_limit_s` the least flow ruled out so far. `upper`, a
    bound proven earlier (an earlier call's answer), is where the search starts."""
    types = node_types(cluster, tm)
    items = []
    for t, nodes in enumerate(types):
        caps = {k: tm.capacity(nodes[0], k) for k in range(1, tm.max_layers(nodes[0]) + 1)}
        # a layer count is worth an item only if no larger count has at least its capacity: a node holding
        # more layers at no less capacity offers more slots, each worth as much (slots may go unused)
        items += [(t, k, c) for k, c in caps.items() if c > 0 and all(caps[j] < c for j in caps if j > k)]
    if not items:
        return 0.0
    counts = [len(t) for t in types]
    L = tm.model.num_layers
    if sum(counts[t] * max(k for ti, k, _ in items if ti == t) for t in {ti for ti, _, _ in items}) < L:
        return 0.0  # the nodes with any capacity cannot hold every layer between them: no flow at all
    hi = layer_work_bound(cluster, tm)
    if upper is not None:
        hi = min(hi, upper)
    deadline = time.perf_counter() + time_limit_s
    highspy.Highs.resetGlobalScheduler(True)  # sized by an earlier solve (e.g. a MILP on more threads)
    # first the configuration LP alone (one LP a flow), then branching on node counts just below it
    for node_limit in (1, 200):
        lo = 0.0 if node_limit == 1 else 0.9 * hi
        while hi - lo > rel_tol * hi and time.perf_counter() < deadline:
            mid = (lo + hi) / 2
            if _reachable(items, counts, mid, L, node_limit=node_limit, deadline=deadline):
                lo = mid
            else:
                hi = mid
    return hi
