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
generation; pricing is a covering knapsack over capacities rounded up, which keeps it a relaxation),
and F is found by bisection. The compact MILP's LP relaxation lets a fast node count its capacity at
every layer it covers up to the flow, fractional layer counts included; the patterns make a layer pay
for whole nodes, which is what separates the two (70B on helix-24: 309 against about 280).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linprog

from cadence.plan.cluster import Cluster
from cadence.plan.lanes import node_types
from cadence.plan.throughput import ThroughputModel

GRID = 2000  # capacity units a pattern's knapsack counts in (items' capacities rounded up to them)


class _CoverLP:
    """The configuration LP at one flow, its patterns kept across solves (branching changes only the
    bounds on the node counts n_tk, never which patterns exist)."""

    def __init__(self, items: list[tuple[int, int, float]], counts: list[int], flow: float, num_layers: int) -> None:
        self.items, self.counts, self.L = items, counts, num_layers
        self.need = GRID
        unit = flow / GRID
        # capacities rounded up to whole units: a pattern that really reaches the flow still does
        self.weight = np.array([min(GRID, math.ceil(c / unit - 1e-9)) for _, _, c in items], dtype=np.int64)
        self.patterns: list[np.ndarray] = []
        for i, w in enumerate(self.weight):  # a pattern of copies of one item each
            if w > 0:
                p = np.zeros(len(items))
                p[i] = math.ceil(GRID / w)
                self.patterns.append(p)

    def solve(self, n_lo: np.ndarray, n_hi: np.ndarray, max_rounds: int = 500) -> tuple[float, np.ndarray]:
        """Column generation to the LP optimum (or until it covers every layer): (layers covered, n)."""
        n_items, n_types = len(self.items), len(self.counts)
        if not self.patterns:
            return 0.0, n_lo
        for _ in range(max_rounds):
            P = np.array(self.patterns).T  # items x patterns
            n_pat = P.shape[1]
            # columns: y (patterns), n (items); rows: items, then types
            a_items = np.hstack([P, -np.diag([float(k) for _, k, _ in self.items])])
            a_types = np.zeros((n_types, n_pat + n_items))
            for i, (t, _, _) in enumerate(self.items):
                a_types[t, n_pat + i] = 1.0
            # a layer holds at most as many slots of a kind as there may be nodes of that kind
            cap = np.floor(n_hi + 1e-9)
            allowed = np.all(cap[:, None] >= P, axis=0)
            bounds = [(0, None if ok else 0) for ok in allowed] + list(zip(n_lo, n_hi, strict=True))
            res = linprog(-np.concatenate([np.ones(n_pat), np.zeros(n_items)]),
                          A_ub=np.vstack([a_items, a_types]),
                          b_ub=np.concatenate([np.zeros(n_items), self.counts]), bounds=bounds, method="highs")
            if res.status == 2:  # the bounds on n leave no solution at all
                return 0.0, n_lo
            if res.status != 0:
                raise RuntimeError(f"cover bound LP failed: {res.message}")
            covered, n = -res.fun, res.x[n_pat:]
            if covered >= self.L - 1e-7:
                return covered, n
            duals = -res.ineqlin.marginals[:n_items]  # >= 0: price of a slot of each kind
            # pricing: the cheapest pattern reaching the flow, at most `cap` copies of each kind (a 0/1
            # knapsack over copies); a column helps if it costs under 1
            cost = np.full(self.need + 1, np.inf)
            cost[0] = 0.0
            index = np.arange(self.need + 1)
            steps: list[tuple[int, np.ndarray]] = []
            for i in range(n_items):
                w = int(self.weight[i])
                for _ in range(int(min(cap[i], math.ceil(self.need / w))) if w > 0 else 0):
                    taken = cost[np.maximum(index - w, 0)] + duals[i]
                    take = taken < cost
                    cost = np.where(take, taken, cost)
                    steps.append((i, take))
            if cost[self.need] >= 1.0 - 1e-9:
                return covered, n  # the LP optimum
            p = np.zeros(n_items)
            c = self.need
            for i, take in reversed(steps):
                if c > 0 and take[c]:
                    p[i] += 1
                    c = max(0, c - int(self.weight[i]))
            self.patterns.append(p)
        raise RuntimeError("cover bound: column generation did not converge")


def _reachable(items: list[tuple[int, int, float]], counts: list[int], flow: float, num_layers: int,
               node_limit: int = 200) -> bool:
    """False only if no whole numbers of nodes per (type, layer count) let the configuration LP cover every
    layer at `flow` (branch and bound on the node counts; patterns stay fractional). True when it cannot
    rule `flow` out within `node_limit` LPs, which keeps the bound valid."""
    lp = _CoverLP(items, counts, flow, num_layers)
    top = np.array([float(counts[t]) for t, _, _ in items])
    stack = [(np.zeros(len(items)), top)]
    solved = 0
    while stack:
        lo, hi = stack.pop()
        solved += 1
        if solved > node_limit:
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


def cover_bound(cluster: Cluster, tm: ThroughputModel, rel_tol: float = 1e-3) -> float:
    """The least flow (within `rel_tol`, rounded up) that no placement of the model on the cluster
    reaches under this capacity table."""
    types = node_types(cluster, tm)
    items = [(t, k, tm.capacity(nodes[0], k)) for t, nodes in enumerate(types)
             for k in range(1, tm.max_layers(nodes[0]) + 1)
             if tm.capacity(nodes[0], k) > 0]
    if not items:
        return 0.0
    counts = [len(t) for t in types]
    L = tm.model.num_layers
    hi = sum(max((k * c for t2, k, c in items if t2 == t), default=0.0) * n for t, n in enumerate(counts)) / L
    lo = 0.0
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        if _reachable(items, counts, mid, L):
            lo = mid
        else:
            hi = mid
    return hi
