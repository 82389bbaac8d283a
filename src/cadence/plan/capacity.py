"""A capacity model of a placement rather than of a node: the flow its router sends, scaled until a node's
compute, a node's KV cache or a link binds.

Under stall-free batching (Sarathi-Serve's chunked prefills under a token budget) a busy node runs full
token-budget iterations whatever its neighbours do, so the nodes of a placement pipeline freely and a
route's throughput is its slowest node's share, as Helix's max flow assumes; the simulator shows every
bottleneck node at its compute-bound capacity (`ThroughputModel.roofline_capacity`) to within 1 %. (Before
prompts were chunked, whole-prompt iterations stalled the pipeline and a round-trip model of convoys was
needed; it no longer is.) So:

1. Shares: the routing flow (IWRR's proportions; the balanced max flow under the compute-bound table
   when none is given) sends a share f_n of the tokens through node n and f_e over link e.
2. Compute: the placement serves T = min over nodes of cap_n / f_n (links: their capacity / f_e).
3. KV: a node holds the requests passing it, T f_n x RTT_n by Little's law, where RTT_n is the expected
   round trip of a request through n (each hop the node's iteration at its load plus `hop_wait` of one,
   `ThroughputModel.node_hop`; each link its latency and one token's activation); T shrinks until they
   fit R(k) on every node.

It returns the tokens/s and the routing flow scaled to that rate. It has no notion of prompts arriving
unevenly or of SWARM's routing; the simulator has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from cadence.plan.cluster import SINK, SOURCE, Cluster
from cadence.plan.placement import FlowSolution, Placement, balanced_flow
from cadence.plan.throughput import ThroughputModel


@dataclass(frozen=True)
class PlacementCapacity:
    """Tokens/s a placement serves, with the flow its router should follow."""

    throughput: float
    flow: FlowSolution
    requests: float  # requests in flight
    rtt_s: float  # mean round trip over requests
    node_requests: dict[str, float] = field(default_factory=dict, hash=False)
    node_tokens_s: dict[str, float] = field(default_factory=dict, hash=False)
    node_hop_s: dict[str, float] = field(default_factory=dict, hash=False)


def placement_capacity(cluster: Cluster, tm: ThroughputModel, placement: Placement,
                       routing: FlowSolution | None = None) -> PlacementCapacity:
    """Tokens/s `placement` serves when its router follows `routing` (see the module docstring)."""
    empty = PlacementCapacity(0.0, FlowSolution(0.0, {}), 0.0, 0.0)
    free = tm.at_latency(-1.0)
    if routing is None:
        routing = balanced_flow(cluster, placement, free)
    usable = {}
    for name, (s, e) in placement.ranges.items():
        node = cluster.node(name)
        if 1 <= e - s <= tm.max_layers(node) and tm.resident(node, e - s) >= 1:
            usable[name] = (node, e - s)
    edges = {(a, b): f for (a, b), f in routing.edges.items()
             if f > 0 and (a, b) in cluster.links and (a == SOURCE or a in usable) and (b == SINK or b in usable)}
    total = sum(f for (a, _), f in edges.items() if a == SOURCE)
    if total <= 0:
        return empty
    share = {e: f / total for e, f in edges.items()}
    through = {n: sum(f for (a, _), f in share.items() if a == n) for n in usable}
    live = [n for n in usable if through[n] > 0]
    cap = {n: free.compute_capacity(*usable[n]) for n in live}
    bounds = [cap[n] / through[n] for n in live]
    bounds += [tm.link_capacity(a, b, cluster.links[(a, b)]) / f for (a, b), f in share.items()]
    link_s = {(a, b): tm.link_time(a, b, cluster.links[(a, b)]) for a, b in share}
    g = nx.DiGraph([e for e in share if e[0] != SOURCE and e[1] != SINK])
    g.add_nodes_from(live)
    order = list(nx.topological_sort(g))
    ins = {n: [(a, f) for (a, b), f in share.items() if b == n] for n in live}
    outs = {n: [(b, f) for (a, b), f in share.items() if a == n] for n in live}

    def trips(rate: float) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """Hops at `rate` tokens/s, the expected round trip through each node, and the time back from it.

        A token waits at a busy node for the iteration in progress: half of one when it arrives at random,
        but in a closed loop it left the node when an iteration ended and comes back `x` later, the
        next one having started at once, so it waits tau - x where that is more. Scaled by utilization."""
        tau = {n: tm.iteration_at(*usable[n], rate * through[n]) for n in live}
        busy = {n: min(1.0, rate * through[n] / cap[n]) if cap[n] > 0 else 1.0 for n in live}
        wait = {n: tm.config.hop_wait * tau[n] * busy[n] for n in live}
        for _ in range(8):
            hop = {n: tau[n] + wait[n] for n in live}
            fwd: dict[str, float] = {}
            for n in order:  # expected time from the coordinator to arriving at n
                fwd[n] = sum(f * (fwd.get(a, 0.0) + hop.get(a, 0.0) + link_s[(a, n)]) for a, f in ins[n]) / sum(
                    f for _, f in ins[n])
            back: dict[str, float] = {}
            for n in reversed(order):  # expected time from leaving n to the coordinator
                back[n] = sum(f * (link_s[(n, b)] + hop.get(b, 0.0) + back.get(b, 0.0)) for b, f in outs[n]) / sum(
                    f for _, f in outs[n])
            wait = {n: busy[n] * max(tm.config.hop_wait * tau[n], tau[n] - fwd[n] - back[n]) for n in live}
        hop = {n: tau[n] + wait[n] for n in live}
        return hop, {n: fwd[n] + hop[n] + back[n] for n in live}, back

    def fits(rate: float) -> bool:
        _, rtt, _ = trips(rate)
        return all(rate * through[n] * rtt[n] <= tm.resident(*usable[n]) for n in live)

    # hops grow with the rate, so the requests in flight do: the largest rate whose requests fit every KV
    throughput = max(0.0, min(bounds))
    if not fits(throughput):
        lo = 0.0
        for _ in range(40):
            mid = (lo + throughput) / 2
            lo, throughput = (mid, throughput) if fits(mid) else (lo, mid)
        throughput = lo
    hop, rtt, back = trips(throughput)
    node_requests = {n: throughput * through[n] * rtt[n] for n in live}
    requests = sum(throughput * f * (link_s[(SOURCE, b)] + hop[b] + back[b]) for (a, b), f in share.items() if a == SOURCE)
    return PlacementCapacity(
        throughput=throughput,
        flow=FlowSolution(value=throughput, edges={e: f * throughput for e, f in share.items()}),
        requests=requests, rtt_s=requests / throughput if throughput > 0 else 0.0,
        node_requests=node_requests, node_tokens_s={n: throughput * through[n] for n in live}, node_hop_s=hop,
    )
