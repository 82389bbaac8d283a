"""Max flow and the placement MILP on small clusters whose optimum is known by hand."""

from __future__ import annotations

import pytest

from cadence.plan.cluster import SINK, SOURCE, parse_cluster
from cadence.plan.milp import MilpConfig, solve_milp
from cadence.plan.model import ModelSpec
from cadence.plan.placement import Placement, balanced_flow, max_flow
from cadence.plan.throughput import ThroughputModel

# 4 layers of 1 GB each (hidden 8192 would be big; pick shapes for round numbers is not needed:
# measured capacities below replace the roofline, so the hand optimum depends only on them)
MODEL = ModelSpec("toy", num_layers=4, hidden=1024, num_heads=8, num_kv_heads=8, intermediate=4096)


def two_type_cluster(extra: dict | None = None) -> object:
    data = {
        "name": "toy",
        "defaults": {"intra_region": {"bandwidth_gbps": 100, "latency_ms": 1}},
        "nodes": [{"name": "big", "gpu": "A100", "replicas": 2}, {"name": "small", "gpu": "T4", "replicas": 2}],
    }
    data.update(extra or {})
    return parse_cluster(data)


def toy_model(measured: dict[tuple[str, int], float]) -> ThroughputModel:
    return ThroughputModel(MODEL, measured=measured)


# A100 holds any k at 100/k tokens/s... T4 serves 2 layers at 30, 1 layer at 60 (others from the roofline
# scaled tiny so they never win).
MEASURED = {("A100", 1): 400.0, ("A100", 2): 200.0, ("A100", 3): 10.0, ("A100", 4): 100.0,
            ("T4", 1): 60.0, ("T4", 2): 30.0, ("T4", 3): 1.0, ("T4", 4): 1.0}


def test_max_flow_of_two_pipelines_adds_and_chain_takes_min() -> None:
    cluster = two_type_cluster()
    tm = toy_model(MEASURED)
    two = Placement("two", {"big-0": (0, 4), "big-1": (0, 4)}, 4)
    assert max_flow(cluster, two, tm).value == pytest.approx(200.0)
    chain = Placement("chain", {"big-0": (0, 2), "small-0": (2, 3), "small-1": (3, 4)}, 4)
    # min(200, 60, 60)
    assert max_flow(cluster, chain, tm).value == pytest.approx(60.0)
    sol = max_flow(cluster, chain, tm)
    assert sol.edges[(SOURCE, "big-0")] == pytest.approx(60.0)
    assert sol.edges[("small-1", SINK)] == pytest.approx(60.0)


def test_max_flow_respects_link_capacity() -> None:
    # 1 Mbps between the two halves: activation 2 KB/token x (512+128)/128 -> 12.2 tokens/s
    cluster = two_type_cluster({"links": [{"nodes": ["big-0", "big-1"], "bandwidth_gbps": 0.001}]})
    tm = toy_model(MEASURED)
    split = Placement("split", {"big-0": (0, 2), "big-1": (2, 4)}, 4)
    expected = 0.001e9 / 8 / (MODEL.activation_bytes * 640 / 128)
    assert max_flow(cluster, split, tm).value == pytest.approx(expected, rel=1e-3)


def test_milp_finds_hand_optimum() -> None:
    # Best by hand: each A100 holds 2 layers (200/s): pair them as [0,2)->[2,4) = 200; the T4s add
    # [0,2)->[2,4) at 30 -> 230. Alternatives: A100s whole model 100+100 = 200 (+T4 pipeline 30 = 230, tie);
    # A100 k=1 needs 4 nodes per pipeline. The optimum is 230.
    cluster = two_type_cluster()
    tm = toy_model(MEASURED)
    warm = Placement("warm", {"big-0": (0, 4)}, 4)
    res = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=20, mip_gap=1e-6))
    assert res.objective == pytest.approx(230.0, rel=1e-6)
    assert res.gap < 1e-3
    assert res.lp_bound >= res.objective - 1e-6
    assert res.placement.covers_model()


def test_milp_partial_inference_uses_overlap() -> None:
    # One A100 holding all 4 layers at 100 and one holding [2,4) at 200 (k=2): without partial
    # inference [0,4) cannot feed [2,4); with it, best is still bounded by hand: layer-work and caps.
    cluster = parse_cluster({"nodes": [{"name": "a", "gpu": "A100", "replicas": 2}]})
    tm = toy_model({("A100", 1): 400.0, ("A100", 2): 200.0, ("A100", 3): 10.0, ("A100", 4): 100.0})
    warm = Placement("warm", {"a-0": (0, 4), "a-1": (0, 4)}, 4)
    res = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=20, mip_gap=1e-6))
    # by hand: [0,2)->[2,4) with both at 200 gives 200, equal to two full copies (100+100)
    assert res.objective == pytest.approx(200.0, rel=1e-6)


def test_balanced_flow_has_the_max_value_and_shares_slack_evenly() -> None:
    # two A100s (layers 0-1, 200 tok/s each) feed two T4s (layers 2-3, 30 tok/s each): max flow 60.
    # The A100s have slack; a balanced flow loads them 30 + 30 (IWRR then alternates), not 60 + 0.
    cluster = two_type_cluster()
    tm = toy_model(MEASURED)
    p = Placement("fan", {"big-0": (0, 2), "big-1": (0, 2), "small-0": (2, 4), "small-1": (2, 4)}, 4)
    flow = balanced_flow(cluster, p, tm)
    assert flow.value == pytest.approx(max_flow(cluster, p, tm).value) == pytest.approx(60.0)
    slice_ = 200.0 / 32  # balanced to within one slice of the A100s' capacity
    assert abs(flow.through("big-0") - 30.0) <= slice_ and abs(flow.through("big-1") - 30.0) <= slice_
    assert flow.through("small-0") == pytest.approx(30.0)


def test_milp_lp_bound_counts_only_the_flow_a_fast_node_can_use() -> None:
    # Two layers. "big" serves 1 layer at 1000 tokens/s or both at 100; "small" 1 layer at 10 or both at 5.
    # By hand the optimum is 105: big [0,2) in parallel with small [0,2) (big [0,1) -> small [1,2) gives 10).
    # The bare layer-work bound credits big with 1 x 1000 layer-tokens/s and small with 10: (1000 + 10) / 2 =
    # 505. A node carries at most the whole flow F, so big adds at most max(min(1000, F), 2 min(100, F))
    # and 2F <= 2 x 100 + 10: the LP bound falls to about 105.
    model = ModelSpec("two", num_layers=2, hidden=1024, num_heads=8, num_kv_heads=8, intermediate=4096)
    cluster = parse_cluster({"nodes": [{"name": "big", "gpu": "A100"}, {"name": "small", "gpu": "T4"}]})
    tm = ThroughputModel(model, measured={("A100", 1): 1000.0, ("A100", 2): 100.0, ("T4", 1): 10.0, ("T4", 2): 5.0})
    warm = Placement("warm", {"big": (0, 2)}, 2)
    res = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=20, mip_gap=1e-6))
    assert res.objective == pytest.approx(105.0, rel=1e-6)
    assert 105.0 - 1e-6 <= res.lp_bound <= 110.0 + 1e-6
    assert res.gap < 1e-3
