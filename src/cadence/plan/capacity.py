"""A capacity model of a placement rather than of a node: requests in flight over round-trip time.

Offline serving fills every KV cache: a request is admitted when its KV fits on every node of its
route, and each request yields one token per round trip. So a route with n requests in flight serves
n / RTT tokens/s, and RTT is a property of the placement: the hops of that route, each a convoy's
iteration at its node, plus the links. The per-node table (`ThroughputModel.capacity`) charges every
node the same layer share of one latency budget whatever the placement; this model charges each route
its own round trip:

1. Requests in flight: a min-cost max flow of *requests* through the placement's layer graph, each node
   holding at most R(k) (its KV cache), each request costing the hop times of its route. That is what
   admission by KV converges to, and its edge proportions are the weights IWRR routes requests by.
2. Round trips: each node's expected time from the coordinator (forward) and back to it (backward)
   under those routing proportions, plus its own hop; a node's requests pass it once per RTT, so it
   serves n_i / RTT_i tokens/s.
3. Hops: a node's n_i requests pass it in `convoys` bunches (`ThroughputModel.convoy_hop`); a node that
   cannot serve its token rate at that batch batches more, and one that cannot serve it at all (compute
   bound) slows every round trip through it until it can. A fixed point of 2-3.

It returns the tokens/s the placement serves and the routing flow (request proportions scaled to that
rate) that IWRR should follow. It has no notion of prompts arriving unevenly or of SWARM's routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx

from cadence.plan.cluster import SINK, SOURCE, Cluster
from cadence.plan.placement import FlowSolution, Placement, can_follow
from cadence.plan.throughput import TOKEN_ID_BYTES, ThroughputModel

MS = 1e4  # min-cost flow costs in 0.1 ms


@dataclass(frozen=True)
class PlacementCapacity:
    """Tokens/s a placement serves under KV-bound admission, with the flow its router should follow."""

    throughput: float
    flow: FlowSolution
    requests: float  # requests in flight
    rtt_s: float  # mean round trip over requests
    node_requests: dict[str, float] = field(default_factory=dict, hash=False)
    node_tokens_s: dict[str, float] = field(default_factory=dict, hash=False)
    node_hop_s: dict[str, float] = field(default_factory=dict, hash=False)


def _edges(cluster: Cluster, placement: Placement, usable: set[str]) -> list[tuple[str, str]]:
    L = placement.num_layers
    out = []
    for (a, b) in cluster.links:
        if a == SOURCE:
            ok = b in usable and placement.ranges[b][0] == 0
        elif b == SINK:
            ok = a in usable and placement.ranges[a][1] == L
        else:
            ok = (a in usable and b in usable
                  and can_follow(placement.ranges[a], placement.ranges[b], placement.partial_inference)
                  and (placement.groups is None or placement.groups[a] == placement.groups[b]))
        if ok:
            out.append((a, b))
    return out


def _request_flow(edges: list[tuple[str, str]], resident: dict[str, int],
                  hop: dict[str, float], link_s: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Most requests in flight (each node holds at most its KV's worth), on the quickest routes."""
    g = nx.DiGraph()
    for n, r in resident.items():
        g.add_edge(f"{n}/in", f"{n}/out", capacity=r, weight=int(hop[n] * MS))
    for a, b in edges:
        u = SOURCE if a == SOURCE else f"{a}/out"
        v = SINK if b == SINK else f"{b}/in"
        g.add_edge(u, v, weight=int(link_s[(a, b)] * MS))
    if SOURCE not in g or SINK not in g:
        return {}
    flows = nx.max_flow_min_cost(g, SOURCE, SINK)
    result = {}
    for u, targets in flows.items():
        if u.endswith("/in"):
            continue
        for v, f in targets.items():
            if f > 0:
                result[(u.removesuffix("/out"), v.removesuffix("/in"))] = float(f)
    return result


def _requests_along(routing: FlowSolution, edges: list[tuple[str, str]],
                    resident: dict[str, int]) -> dict[tuple[str, str], float]:
    """Requests in flight when IWRR sends them by `routing`'s proportions until a node's KV is full, then
    around full nodes (masking): the proportional share, topped up by a max flow of what KV is left."""
    allowed = {e for e in edges if routing.edges.get(e, 0.0) > 0}
    through = {n: sum(f for (a, _), f in routing.edges.items() if a == n and (a, _) in allowed) for n in resident}
    total = sum(f for (a, b), f in routing.edges.items() if a == SOURCE and (a, b) in allowed)
    if total <= 0:
        return {}
    scale = min((resident[n] / f for n, f in through.items() if f > 0), default=0.0)
    req = {e: routing.edges[e] * scale for e in allowed}
    g = nx.DiGraph()
    for n, r in resident.items():
        used = through[n] * scale
        if r - used >= 1e-3 and through[n] > 0:  # integer milli-requests: float capacities can stall networkx
            g.add_edge(f"{n}/in", f"{n}/out", capacity=int((r - used) * 1000))
    for a, b in allowed:
        g.add_edge(SOURCE if a == SOURCE else f"{a}/out", SINK if b == SINK else f"{b}/in")
    if SOURCE in g and SINK in g:
        _, extra = nx.maximum_flow(g, SOURCE, SINK)
        for u, targets in extra.items():
            if u.endswith("/in"):
                continue
            for v, f in targets.items():
                if f > 0:
                    e = (u.removesuffix("/out"), v.removesuffix("/in"))
                    req[e] = req.get(e, 0.0) + f / 1000
    return {e: f for e, f in req.items() if f > 1e-9}


def _batch_for(tm: ThroughputModel, node, layers: int, rate: float, most: float) -> tuple[float, bool]:
    """Smallest batch at which `node` serves `rate` tokens/s (convoy iterations, prompts included);
    (most, False) if even `most` does not."""
    def serves(b: float) -> float:
        iters = math.ceil(b / tm.config.max_batch)
        work = iters * tm.decode_time(node, layers, b / iters) + b * tm.prefill_s_per_token(node, layers)
        return b / work

    if serves(most) < rate:
        return most, False
    lo, hi = 1.0, most
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if serves(mid) >= rate else (mid, hi)
    return hi, True


def placement_capacity(cluster: Cluster, tm: ThroughputModel, placement: Placement,
                       routing: FlowSolution | None = None, iterations: int = 60) -> PlacementCapacity:
    """Tokens/s `placement` serves when admission fills every KV cache (see the module docstring)."""
    c = tm.config
    usable = {}
    for name, (s, e) in placement.ranges.items():
        node = cluster.node(name)
        k = e - s
        if 1 <= k <= tm.max_layers(node) and tm.resident(node, k) >= 1:
            usable[name] = (node, k)
    empty = PlacementCapacity(0.0, FlowSolution(0.0, {}), 0.0, 0.0)
    if not usable:
        return empty
    edges = _edges(cluster, placement, set(usable))
    link_s = {}
    for a, b in edges:
        link = cluster.links[(a, b)]
        size = TOKEN_ID_BYTES if a == SOURCE or b == SINK else tm.model.activation_bytes
        link_s[(a, b)] = link.latency_s + size / link.bandwidth_bps
    resident = {n: tm.resident(node, k) for n, (node, k) in usable.items()}
    hop = {n: tm.convoy_hop(node, k, resident[n]) for n, (node, k) in usable.items()}
    if routing is not None:
        req = _requests_along(routing, edges, resident)
    else:
        req = _request_flow(edges, resident, hop, link_s)
        if sum(f for (a, _), f in req.items() if a == SOURCE) <= 0:
            return empty
        # one more pass with the hop times of the requests actually in flight
        n_at = {n: sum(f for (a, _), f in req.items() if a == n) for n in usable}
        hop = {n: tm.convoy_hop(node, k, max(n_at[n], 1.0)) for n, (node, k) in usable.items()}
        req = _request_flow(edges, resident, hop, link_s)
    if sum(f for (a, _), f in req.items() if a == SOURCE) <= 0:
        return empty
    n_at = {n: sum(f for (a, _), f in req.items() if a == n) for n in usable}
    live = [n for n in usable if n_at[n] > 0]
    succ: dict[str, list[tuple[str, float]]] = {}
    pred: dict[str, list[tuple[str, float]]] = {}
    for (a, b), f in req.items():
        succ.setdefault(a, []).append((b, f))
        pred.setdefault(b, []).append((a, f))
    total = sum(f for _, f in succ.get(SOURCE, []))
    # topological order of the used layer graph (ranges only move forward)
    g = nx.DiGraph([(a, b) for (a, b) in req if a != SOURCE and b != SINK])
    g.add_nodes_from(live)
    order = list(nx.topological_sort(g))
    # link capacity in tokens/s, for links that could bind (slow inter-region links)
    link_cap = {e: tm.link_capacity(e[0], e[1], cluster.links[e]) for e in req}
    base = {n: tm.convoy_hop(usable[n][0], usable[n][1], max(n_at[n], 1.0)) for n in live}
    hop = dict(base)
    slow = dict.fromkeys(req, 1.0)  # multiplier on a link's time when its bandwidth binds
    rate = dict.fromkeys(live, 0.0)
    for _ in range(iterations):
        fwd: dict[str, float] = {}
        for n in order:  # expected time from the coordinator to arriving at n
            ins = pred.get(n, [])
            fwd[n] = sum(f * (fwd.get(a, 0.0) + (hop[a] if a != SOURCE else 0.0) + link_s[(a, n)] * slow[(a, n)])
                         for a, f in ins) / sum(f for _, f in ins)
        back: dict[str, float] = {}
        for n in reversed(order):  # expected time from leaving n to the coordinator
            outs = succ.get(n, [])
            back[n] = sum(f * (link_s[(n, b)] * slow[(n, b)] + (hop[b] + back[b] if b != SINK else 0.0))
                          for b, f in outs) / sum(f for _, f in outs)
        rtt = {n: fwd[n] + hop[n] + back[n] for n in live}
        rate = {n: n_at[n] / rtt[n] for n in live}
        new = {}
        for n in live:
            node, k = usable[n]
            b0 = max(n_at[n] / c.convoys, 1.0)
            b, ok = _batch_for(tm, node, k, rate[n], max(n_at[n], 1.0))
            if b <= b0:
                new[n] = base[n]
            else:
                iters = math.ceil(b / c.max_batch)
                work = iters * tm.decode_time(node, k, b / iters) + b * tm.prefill_s_per_token(node, k)
                new[n] = (1.0 + c.hop_wait) * work
                if not ok:  # compute bound: its queue grows until the round trips slow to what it serves
                    new[n] *= rate[n] / (b / work)
        hop = {n: 0.5 * hop[n] + 0.5 * max(new[n], base[n]) for n in live}
        for e, f in req.items():
            a, b = e
            node_rate = rate[b] if a == SOURCE else rate[a]
            share = f / (n_at[b] if a == SOURCE else n_at[a])
            load = node_rate * share
            slow[e] = 0.5 * slow[e] + 0.5 * max(1.0, slow[e] * load / link_cap[e])
    throughput = sum(rate[b] * f / n_at[b] for (a, b), f in req.items() if a == SOURCE)
    requests = sum(n_at[b] for (a, b) in req if a == SOURCE)
    scale = throughput / total
    flow = FlowSolution(value=throughput, edges={e: f * scale for e, f in req.items()})
    return PlacementCapacity(
        throughput=throughput, flow=flow, requests=requests,
        rtt_s=requests / throughput if throughput > 0 else 0.0,
        node_requests=n_at, node_tokens_s=rate, node_hop_s=hop,
    )
