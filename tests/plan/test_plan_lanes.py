"""The placement capacity model (requests in flight over the route's round trip) and lane-built placements."""

from __future__ import annotations

import pytest

from cadence.plan.capacity import placement_capacity
from cadence.plan.cluster import SINK, SOURCE, parse_cluster
from cadence.plan.lanes import LaneLayout, build, lane_search, node_types
from cadence.plan.model import get_model
from cadence.plan.placement import Placement, balanced_flow, max_flow
from cadence.plan.simulator import SimConfig, simulate
from cadence.plan.throughput import ThroughputConfig, ThroughputModel

MODEL = get_model("llama3-8b")
TM = ThroughputModel(MODEL, ThroughputConfig(weight_share=0.5))
CLUSTER = parse_cluster({"nodes": [{"name": "a", "gpu": "A100", "replicas": 2}, {"name": "t", "gpu": "T4", "replicas": 4}]})


def test_a_chain_serves_its_slowest_node_and_the_simulator_agrees() -> None:
    # four T4s in a chain: under stall-free batching every node runs full token-budget iterations, so the
    # chain serves its slowest node's compute-bound capacity; the simulator's bottleneck runs at it
    chain = Placement("chain", {"t-0": (0, 6), "t-1": (6, 14), "t-2": (14, 23), "t-3": (23, 32)}, 32)
    cap = placement_capacity(CLUSTER, TM, chain)
    t = CLUSTER.node("t-3")
    assert cap.throughput == pytest.approx(TM.at_latency(-1).compute_capacity(t, 9))
    assert cap.requests < 4 * TM.resident(t, 9)  # KV does not bind at this budget
    assert cap.rtt_s == pytest.approx(cap.requests / cap.throughput)
    sim = simulate(CLUSTER, TM, chain, cap.flow, SimConfig(duration_s=120, warmup_s=60))
    assert sim.throughput == pytest.approx(cap.throughput, rel=0.03)
    assert sim.node_busy["t-3"] > 0.97 > sim.node_busy["t-0"]


def test_kv_binds_where_a_node_cannot_hold_the_requests_in_flight() -> None:
    # a T4 holding 28 of LLaMA-3-8B's layers keeps 40 requests next to its weights, fewer than a round
    # trip at its compute-bound rate needs: the model caps the rate by Little's law, and so does the simulator
    tm = ThroughputModel(MODEL, ThroughputConfig(weight_share=0.9))
    slow = Placement("slow", {"a-0": (0, 4), "t-0": (4, 32)}, 32)
    cap = placement_capacity(CLUSTER, tm, slow)
    t = CLUSTER.node("t-0")
    compute = tm.at_latency(-1).compute_capacity(t, 28)
    assert cap.throughput < 0.9 * compute
    assert cap.node_requests["t-0"] == pytest.approx(tm.resident(t, 28), rel=1e-3)
    sim = simulate(CLUSTER, tm, slow, cap.flow, SimConfig(duration_s=120, warmup_s=60))
    assert sim.throughput < 0.9 * compute


def test_a_slow_partner_bounds_a_fast_node() -> None:
    # The same A100 holding the same 16 layers serves half as much or less when a T4 holds the other 16;
    # the model and the simulator agree.
    fast = Placement("fast", {"a-0": (0, 16), "a-1": (16, 32)}, 32)
    slow = Placement("slow", {"a-0": (0, 16), "t-0": (16, 32)}, 32)
    model = {p.method: placement_capacity(CLUSTER, TM, p) for p in (fast, slow)}
    assert model["slow"].node_tokens_s["a-0"] < 0.5 * model["fast"].node_tokens_s["a-0"]
    sim = {p.method: simulate(CLUSTER, TM, p, model[p.method].flow, SimConfig(duration_s=120, warmup_s=60)).throughput
           for p in (fast, slow)}
    assert sim["fast"] > 2 * sim["slow"]
    for name in sim:
        assert model[name].throughput == pytest.approx(sim[name], rel=0.05)


def test_model_matches_the_simulator_across_placements() -> None:
    # five placements of one A100 and four T4s, IWRR over the same flow, past the KV-filling transient:
    # the model is within 3 % of the simulator on each, so it ranks them alike
    cluster = parse_cluster({"nodes": [{"name": "a", "gpu": "A100"}, {"name": "t", "gpu": "T4", "replicas": 4}]})
    placements = {
        "a, two T4 lanes": {"a": (0, 16), "t-0": (16, 24), "t-1": (24, 32), "t-2": (16, 24), "t-3": (24, 32)},
        "a alone": {"a": (0, 32)},
        "a short, two T4 lanes": {"a": (0, 8), "t-0": (8, 20), "t-1": (20, 32), "t-2": (8, 20), "t-3": (20, 32)},
        "a, one T4 lane": {"a": (0, 16), "t-0": (16, 24), "t-1": (24, 32)},
    }
    model, sim = {}, {}
    for name, ranges in placements.items():
        p = Placement(name, ranges, 32)
        flow = balanced_flow(cluster, p, TM.at_latency(-1))
        model[name] = placement_capacity(cluster, TM, p, routing=flow).throughput
        sim[name] = simulate(cluster, TM, p, flow, SimConfig(duration_s=120, warmup_s=60)).throughput
        assert model[name] == pytest.approx(sim[name], rel=0.03), name
    assert sorted(model, key=model.get) == sorted(sim, key=sim.get) == list(placements)[::-1]


def test_lane_layout_builds_stages_and_routes_by_lane_capacity() -> None:
    # stage 0: the two A100s in one lane (8 layers each); stage 1: the T4s in two lanes of two (4 layers
    # each). Every A100 request continues on either T4 lane, in proportion to the lanes' capacities.
    types = node_types(CLUSTER, TM)
    assert [g[0].gpu.name for g in types] == ["A100", "T4"]
    built = build(types, TM, LaneLayout(stages=((0,), (1,)), bounds=(0, 16, 32), depth=(2, 2)))
    assert built is not None
    p, flow = built
    assert p.ranges == {"a-0": (0, 8), "a-1": (8, 16), "t-0": (16, 24), "t-1": (24, 32), "t-2": (16, 24),
                        "t-3": (24, 32)}
    assert flow.edges[(SOURCE, "a-0")] == pytest.approx(1.0)
    assert flow.edges[("a-1", "t-0")] == pytest.approx(0.5) == flow.edges[("a-1", "t-2")]
    assert flow.edges[("t-1", SINK)] + flow.edges[("t-3", SINK)] == pytest.approx(1.0)
    # a lane whose nodes cannot hold their share is no layout
    assert build(types, TM, LaneLayout(stages=((0,), (1,)), bounds=(0, 1, 32), depth=(1, 1))) is None


def test_lane_search_beats_the_per_node_table_pick() -> None:
    # The best placement by max flow under a budget's table is not the best by the capacity model; the lane
    # search finds one the model (and the simulator) rate higher.
    cluster = parse_cluster({"nodes": [{"name": "a", "gpu": "A100"}, {"name": "t", "gpu": "T4", "replicas": 4}]})
    found = lane_search(cluster, TM, time_limit_s=20)
    assert found and all(p.covers_model() for _, p, _ in found)
    best_value, best, flow = found[0]
    chain = Placement("chain", {"a": (0, 16), "t-0": (16, 24), "t-1": (24, 32)}, 32)
    assert best_value > placement_capacity(cluster, TM, chain).throughput
    assert max_flow(cluster, best, TM.at_latency(-1)).value > 0
    cfg = SimConfig(duration_s=120, warmup_s=60)
    assert simulate(cluster, TM, best, flow, cfg).throughput > simulate(
        cluster, TM, chain, balanced_flow(cluster, chain, TM.at_latency(-1)), cfg).throughput


def test_lane_search_crosses_depths_that_leave_nodes_out() -> None:
    # helix-24 / LLaMA-2-70B: the best layout it finds is the A100 chain, then one lane of all eight L4s
    # beside one lane of T4s. From two L4 lanes of four, one lane of eight lies beyond depths
    # 5-7, which leave L4s unused: a descent by one node at a time stopped at 1,251 tokens/s (model)
    from cadence.plan.cluster import load_cluster

    cluster = load_cluster("helix-24")
    tm = ThroughputModel(get_model("llama2-70b"))
    value, placement, _ = lane_search(cluster, tm, time_limit_s=120)[0]
    assert value > 1.15 * 1251
    assert placement_capacity(cluster, tm, placement).throughput == pytest.approx(value, rel=0.05)
    l4_starts = {placement.ranges[n.name][0] for n in cluster.nodes if n.label == "L4"}
    assert len(l4_starts) == 8  # one lane: every L4 starts somewhere else
