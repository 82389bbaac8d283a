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


def test_a_kv_bound_chain_serves_its_requests_once_per_round_trip() -> None:
    # four T4s in a chain, 8 layers each: R requests in flight (the KV of one T4), each yields one token
    # per round trip: four convoy hops and five links
    t = CLUSTER.node("t-0")
    chain = Placement("chain", {f"t-{i}": (8 * i, 8 * i + 8) for i in range(4)}, 32)
    cap = placement_capacity(CLUSTER, TM, chain)
    n = TM.resident(t, 8)
    route = [SOURCE, "t-0", "t-1", "t-2", "t-3", SINK]
    links = sum(TM.link_time(a, b, CLUSTER.links[(a, b)]) for a, b in zip(route, route[1:], strict=False))
    assert cap.requests == pytest.approx(n)
    assert cap.node_hop_s["t-0"] == pytest.approx(TM.convoy_hop(t, 8, n))  # not compute bound at this rate
    assert cap.throughput == pytest.approx(n / (4 * TM.convoy_hop(t, 8, n) + links), rel=1e-6)
    assert cap.rtt_s == pytest.approx(cap.requests / cap.throughput)


def test_round_trip_is_a_property_of_the_placement() -> None:
    # The same A100 holding the same 16 layers: the per-node table gives it one capacity whatever follows
    # it, so max flow under a budget ranks a slow partner like a fast one when the A100 is the bottleneck.
    # Its requests wait on the T4 every round trip, so it serves fewer tokens there; the simulator agrees.
    fast = Placement("fast", {"a-0": (0, 16), "a-1": (16, 32)}, 32)
    slow = Placement("slow", {"a-0": (0, 16), "t-0": (16, 32)}, 32)
    table = TM.at_latency(1.5)
    assert table.capacity(CLUSTER.node("a-0"), 16) == table.capacity(CLUSTER.node("a-0"), 16)
    model = {p.method: placement_capacity(CLUSTER, TM, p) for p in (fast, slow)}
    assert model["slow"].node_tokens_s["a-0"] < 0.5 * model["fast"].node_tokens_s["a-0"]
    assert model["slow"].node_hop_s["t-0"] > 4 * model["fast"].node_hop_s["a-1"]
    sim = {p.method: simulate(CLUSTER, TM, p, model[p.method].flow, SimConfig(duration_s=120, warmup_s=60)).throughput
           for p in (fast, slow)}
    assert sim["fast"] > 2 * sim["slow"]
    assert model["fast"].throughput > 2 * model["slow"].throughput


def test_model_ranks_placements_as_the_simulator_does() -> None:
    # five placements of one A100 and four T4s; the model and the simulator (IWRR over the same flow,
    # past the KV-filling transient) order them alike
    cluster = parse_cluster({"nodes": [{"name": "a", "gpu": "A100"}, {"name": "t", "gpu": "T4", "replicas": 4}]})
    placements = {
        "a alone": {"a": (0, 32)},
        "a, two T4 lanes": {"a": (0, 16), "t-0": (16, 24), "t-1": (24, 32), "t-2": (16, 24), "t-3": (24, 32)},
        "a short, two T4 lanes": {"a": (0, 8), "t-0": (8, 20), "t-1": (20, 32), "t-2": (8, 20), "t-3": (20, 32)},
        "a, one T4 lane": {"a": (0, 16), "t-0": (16, 24), "t-1": (24, 32)},
        "T4 chain": {"t-0": (0, 8), "t-1": (8, 16), "t-2": (16, 24), "t-3": (24, 32)},
    }
    model, sim = {}, {}
    for name, ranges in placements.items():
        p = Placement(name, ranges, 32)
        flow = balanced_flow(cluster, p, TM.at_latency(-1))
        model[name] = placement_capacity(cluster, TM, p, routing=flow).throughput
        sim[name] = simulate(cluster, TM, p, flow, SimConfig(duration_s=120, warmup_s=60)).throughput
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
