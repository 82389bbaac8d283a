"""Stage-structured placements and the layer-cover bound, against brute force on small clusters."""

from __future__ import annotations

import itertools
import random

import pytest

from cadence.plan.cluster import load_cluster, parse_cluster
from cadence.plan.cover_bound import cover_bound
from cadence.plan.milp import MilpConfig, solve_milp
from cadence.plan.model import ModelSpec, get_model
from cadence.plan.placement import Placement, max_flow
from cadence.plan.stages import stage_placement
from cadence.plan.throughput import ThroughputConfig, ThroughputModel

MODEL = ModelSpec("toy", num_layers=4, hidden=1024, num_heads=8, num_kv_heads=8, intermediate=4096)


def brute_force(cluster, tm: ThroughputModel, partial: bool) -> float:
    """The largest max flow over every placement (each node unused or holding any range)."""
    L = tm.model.num_layers
    names = cluster.names
    choices = [None] + [(s, e) for s in range(L) for e in range(s + 1, L + 1)]
    best = 0.0
    for combo in itertools.product(choices, repeat=len(names)):
        ranges = {n: r for n, r in zip(names, combo, strict=True)
                  if r is not None and tm.capacity(cluster.node(n), r[1] - r[0]) > 0}
        p = Placement("all", ranges, L, partial)
        if p.covers_model():
            best = max(best, max_flow(cluster, p, tm).value)
    return best


def random_case(seed: int) -> tuple[object, ThroughputModel]:
    rng = random.Random(seed)
    cluster = parse_cluster({"defaults": {"intra_region": {"bandwidth_gbps": 100, "latency_ms": 1}},
                             "nodes": [{"name": "a", "gpu": "A100", "replicas": 2}, {"name": "t", "gpu": "T4"}]})
    measured = {}
    for gpu, scale in (("A100", 400.0), ("T4", 120.0)):
        cap = scale * rng.uniform(0.5, 1.0)
        for k in range(1, 5):
            cap *= rng.uniform(0.35, 1.05)  # mostly falling with the layers held, sometimes rising
            measured[(gpu, k)] = round(cap, 1)
    return cluster, ThroughputModel(MODEL, measured=measured)


@pytest.mark.parametrize("seed", range(6))
def test_cover_bound_is_above_every_placement_and_stages_below(seed: int) -> None:
    cluster, tm = random_case(seed)
    best = brute_force(cluster, tm, partial=False)
    best_partial = brute_force(cluster, tm, partial=True)
    bound = cover_bound(cluster, tm)
    # a bound on every placement, with or without partial inference
    assert bound >= best_partial - 1e-6 and bound >= best - 1e-6
    staged = stage_placement(cluster, tm)
    assert staged is not None
    placement, value = staged
    got = max_flow(cluster, placement, tm).value
    assert got >= value - 1e-6  # what the stage model counted is there
    assert got <= best + 1e-6
    # on these small cases the stage family holds the optimum itself
    assert got == pytest.approx(best, rel=3e-3)


def test_hand_case_stage_optimum_and_tight_bound() -> None:
    # two A100s (400 at 1 layer, 200 at 2, 100 at 4) and two T4s (60 at 1 layer, 30 at 2), 4 layers.
    # Best by hand: 230 (A100 [0,2)->[2,4) at 200 beside T4 [0,2)->[2,4) at 30). The cover bound:
    # 230 is reachable; above it a layer needs more than 200 + 30, i.e. an A100 holding one layer (400) on
    # it, which covers only that layer, or both A100s, which leaves others short.
    cluster = parse_cluster({"defaults": {"intra_region": {"bandwidth_gbps": 100, "latency_ms": 1}},
                             "nodes": [{"name": "big", "gpu": "A100", "replicas": 2},
                                       {"name": "small", "gpu": "T4", "replicas": 2}]})
    tm = ThroughputModel(MODEL, measured={("A100", 1): 400.0, ("A100", 2): 200.0, ("A100", 3): 10.0,
                                          ("A100", 4): 100.0, ("T4", 1): 60.0, ("T4", 2): 30.0,
                                          ("T4", 3): 1.0, ("T4", 4): 1.0})
    placement, _ = stage_placement(cluster, tm)
    assert max_flow(cluster, placement, tm).value == pytest.approx(230.0, rel=3e-3)
    assert 230.0 - 1e-6 <= cover_bound(cluster, tm) <= 230.0 * 1.01


def test_helix24_70b_stage_placement_is_within_a_percent_of_the_cover_bound() -> None:
    # the compact MILP's LP relaxation says 309 here and HiGHS's heuristics stay at 185 for minutes
    cluster = load_cluster("helix-24")
    tm = ThroughputModel(get_model("llama2-70b"), ThroughputConfig()).at_latency(3.3)
    bound = cover_bound(cluster, tm)
    placement, _ = stage_placement(cluster, tm, upper=bound)
    flow = max_flow(cluster, placement, tm).value
    assert bound * 0.99 <= flow <= bound + 1e-6
    result = solve_milp(cluster, tm, placement, MilpConfig(time_limit_s=3), cover=bound)
    assert result.objective >= flow - 1e-6
    assert result.cover_bound == bound and result.dual_bound <= bound + 1e-6
    assert result.gap < 0.01
    assert result.lp_bound > 1.05 * result.dual_bound  # the compact LP alone would report > 5 %


def test_cover_bound_and_milps_on_other_thread_counts_share_one_process() -> None:
    # HiGHS sizes one thread scheduler a process at its first solve; the cover bound's LPs (one thread)
    # and a MILP on two must not break each other
    cluster, tm = random_case(0)
    warm = stage_placement(cluster, tm)[0]
    first = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=5, threads=2))
    bound = cover_bound(cluster, tm)
    again = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=5, threads=1), cover=bound)
    assert first.status == again.status == "Optimal"
    assert first.lp_bound == pytest.approx(again.lp_bound) and again.lp_bound > 0
    assert bound == pytest.approx(first.cover_bound)


def test_cover_bound_is_zero_when_the_nodes_with_capacity_cannot_hold_every_layer() -> None:
    # under a tight latency budget only the A100 has any capacity and it holds 3 of the 4 layers: no flow
    # at all (the bisection once halved its upper end towards zero until a flow unit underflowed)
    cluster = parse_cluster({"defaults": {"intra_region": {"bandwidth_gbps": 100, "latency_ms": 1}},
                             "nodes": [{"name": "big", "gpu": "A100"}, {"name": "small", "gpu": "T4", "replicas": 2}]})
    tm = ThroughputModel(MODEL, measured={("A100", 1): 400.0, ("A100", 2): 200.0, ("A100", 3): 100.0,
                                          ("A100", 4): 0.0, ("T4", 1): 0.0, ("T4", 2): 0.0})
    assert cover_bound(cluster, tm) == 0.0
    assert cover_bound(cluster, tm, upper=50.0) == 0.0
    # T4s that carry one layer each cover the model: best by hand 100 (the A100 on three layers at 100,
    # both T4s on the last at 60 each)
    tm = ThroughputModel(MODEL, measured={**tm.measured, ("T4", 1): 60.0})
    assert 100.0 - 1e-6 <= cover_bound(cluster, tm) <= 100.0 * 1.01
