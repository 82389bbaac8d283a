"""The latency-aware capacity model: fixed per-hop cost, KV-limited concurrency, and its use by max flow and MILP."""

from __future__ import annotations

import pytest

from cadence.plan.cluster import parse_cluster
from cadence.plan.milp import MilpConfig, solve_milp
from cadence.plan.model import get_model
from cadence.plan.placement import Placement, latency_feasible_graph, max_flow, route_latencies
from cadence.plan.throughput import ThroughputConfig, ThroughputModel

MODEL = get_model("llama3-8b")


def a100s(n: int) -> object:
    return parse_cluster({"nodes": [{"name": "a", "gpu": "A100", "replicas": n}]})


def test_hop_time_includes_the_fixed_iteration_cost() -> None:
    node = a100s(1).nodes[0]
    tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=1.0))
    overhead = tm.config.iteration_overhead_ms / 1e3
    # one layer still pays the whole per-iteration overhead, so 1-layer hops are not 1/32 of a 32-layer hop
    assert tm.hop_time(node, 1) > (1 + tm.config.hop_wait) * overhead
    assert tm.hop_time(node, 1) > tm.hop_time(node, 32) / 32 * 3


def test_capacity_is_bounded_by_kv_over_latency_budget() -> None:
    node = a100s(1).nodes[0]
    for lam in (0.05, 0.2, 1.0):
        tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=lam))
        for k in (1, 8, 32):
            assert tm.capacity(node, k) <= tm.resident(node, k) / lam + 1e-9
            assert tm.capacity(node, k) <= tm.compute_capacity(node, k) + 1e-9
    free = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=-1))
    assert free.capacity(node, 32) == pytest.approx(free.compute_capacity(node, 32))


def test_hop_beyond_the_budget_gets_no_capacity() -> None:
    node = a100s(1).nodes[0]
    tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=0.004))
    assert tm.capacity(node, 32) == 0.0


def test_max_flow_keeps_only_routes_within_the_budget() -> None:
    cluster = a100s(4)
    chain = Placement("chain", {f"a-{i}": (8 * i, 8 * i + 8) for i in range(4)}, 32)
    loose = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=10.0))
    trip = max(route_latencies(latency_feasible_graph(cluster, chain, loose), cluster, loose).values())
    assert max_flow(cluster, chain, loose).value > 0
    for lam in (trip / 8, trip / 2, trip, 2 * trip):
        tm = loose.at_latency(lam)
        lat = route_latencies(latency_feasible_graph(cluster, chain, tm), cluster, tm)
        assert all(v <= lam + 1e-9 for v in lat.values())
        assert (max_flow(cluster, chain, tm).value > 0) == bool(lat)
    assert max_flow(cluster, chain, loose.at_latency(trip / 8)).value == 0.0


def test_milp_respects_the_latency_budget() -> None:
    # two A100s: the MILP's placement must keep its round trip within the budget, and its flow must
    # equal the max flow of that placement under the same (latency-checked) capacities
    cluster = a100s(2)
    tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=0.3))
    warm = Placement("warm", {"a-0": (0, 32)}, 32)
    res = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=20, mip_gap=1e-4))
    assert res.objective >= max_flow(cluster, warm, tm).value - 1e-6
    g = latency_feasible_graph(cluster, res.placement, tm)
    assert max(route_latencies(g, cluster, tm).values()) <= 0.3 + 1e-9
    assert res.flow.value == pytest.approx(res.objective)
