"""The latency-aware capacity model: hop times under load, layer-proportional shares of the budget, KV limits."""

from __future__ import annotations

import pytest

from cadence.plan.cluster import parse_cluster
from cadence.plan.milp import MilpConfig, solve_milp
from cadence.plan.model import get_model
from cadence.plan.placement import Placement, max_flow
from cadence.plan.throughput import ThroughputConfig, ThroughputModel

MODEL = get_model("llama3-8b")


def a100s(n: int) -> object:
    return parse_cluster({"nodes": [{"name": "a", "gpu": "A100", "replicas": n}]})


def test_hop_pays_the_fixed_cost_and_grows_with_load_to_a_full_iteration() -> None:
    node = a100s(1).nodes[0]
    tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=1.0))
    overhead = tm.config.iteration_overhead_ms / 1e3
    # one layer still pays the whole per-iteration overhead, so 1-layer hops are not 1/32 of a 32-layer hop
    assert tm.node_hop(node, 1, 0.0) > (1 + tm.config.hop_wait) * overhead
    assert tm.node_hop(node, 1, 0.0) > tm.node_hop(node, 32, 0.0) / 32 * 3
    # an iteration carries what arrived during the last one: it lengthens with the load, and from the
    # compute-bound rate on it is a full token-budget iteration
    cap = tm.compute_capacity(node, 8)
    iters = [tm.iteration_at(node, 8, r) for r in (0.0, 0.25 * cap, 0.5 * cap, 0.9 * cap, cap, 2 * cap)]
    assert iters == sorted(iters) and iters[-1] > iters[0]
    assert iters[-1] == pytest.approx(iters[-2]) and iters[-1] == tm.iteration_at(node, 8, 10 * cap)
    # a fixed point: the iteration's decode steps are what arrives during it
    tau = iters[2]
    q = tm.config.prompt_tokens / tm.config.output_tokens
    b = 0.5 * cap * tau
    context = tm.config.prompt_tokens + tm.config.output_tokens / 2
    assert tau == pytest.approx(tm.iteration_time(node, 8, b * (1 + q) * 8, b * context * 8), rel=1e-6)


def test_capacity_is_little_law_within_the_layer_share() -> None:
    node = a100s(1).nodes[0]
    for lam in (0.05, 0.2, 1.0):
        tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=lam))
        for k in (1, 8, 32):
            cap, n, hop = tm.operating_point(node, k)
            assert cap <= tm.resident(node, k) / lam + 1e-9
            assert cap <= tm.compute_capacity(node, k) + 1e-9
            if cap > 0:
                assert cap == pytest.approx(min(n / lam, tm.compute_capacity(node, k)))
                assert hop <= lam * k / MODEL.num_layers + 1e-12  # its share of the round trip
                # a little more load would break the share, or KV, or compute is the limit
                more = tm.node_hop(node, k, cap * 1.01)
                assert (n >= tm.resident(node, k) - 1e-6 or more > lam * k / MODEL.num_layers
                        or cap == pytest.approx(tm.compute_capacity(node, k)))
    free = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=-1))
    assert free.capacity(node, 32) == pytest.approx(free.compute_capacity(node, 32))


def test_hop_beyond_the_share_gets_no_capacity() -> None:
    node = a100s(1).nodes[0]
    tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=0.004))
    assert tm.capacity(node, 32) == 0.0
    assert ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=0.5)).capacity(node, 32) > 0


def test_any_route_of_a_placement_fits_the_budget() -> None:
    # node times of a chain (the layer shares) add up to at most the budget, however it is cut
    cluster = a100s(4)
    for lam in (0.1, 0.4, 1.5):
        tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=lam))
        for cut in ((8, 8, 8, 8), (1, 3, 12, 16), (20, 12)):
            bounds = [sum(cut[:i]) for i in range(len(cut) + 1)]
            chain = Placement("chain", {f"a-{i}": (bounds[i], bounds[i + 1]) for i in range(len(cut))}, 32)
            if max_flow(cluster, chain, tm).value > 0:
                assert sum(tm.hop_time(cluster.node(n), chain.layers(n)) for n in chain.ranges) <= lam + 1e-9


def test_milp_under_a_budget_matches_max_flow_of_its_placement() -> None:
    cluster = a100s(2)
    tm = ThroughputModel(MODEL, ThroughputConfig(latency_budget_s=0.3))
    warm = Placement("warm", {"a-0": (0, 32)}, 32)
    res = solve_milp(cluster, tm, warm, MilpConfig(time_limit_s=20, mip_gap=1e-4))
    assert res.objective >= max_flow(cluster, warm, tm).value - 1e-6
    assert res.flow.value == pytest.approx(res.objective)
    assert res.objective <= res.dual_bound + 1e-6


def test_kv_budget_leaves_room_for_the_iteration_activations() -> None:
    # a T4 holding 8 layers of LLaMA-2-70B: 16 GB x 0.95, minus 8 x 1.71 GB of weights, minus the
    # activations of the largest iteration: a 4096-token budget ((2 x 8192 + 3 x 28672) x 2 B a token)
    t4 = parse_cluster({"nodes": [{"name": "t", "gpu": "T4"}]}).nodes[0]
    m = get_model("llama2-70b")
    tm = ThroughputModel(m, ThroughputConfig(latency_budget_s=-1, token_budget=4096))
    act = 4096 * (2 * 8192 + 3 * 28672) * 2
    assert tm.activation_workspace_bytes() == pytest.approx(act)
    kv = 16e9 * 0.95 - 8 * m.layer_bytes - act
    assert tm.kv_budget_bytes(t4, 8) == pytest.approx(kv)
    assert tm.resident(t4, 8) == int(kv // (640 * 8 * 2 * 8 * 128 * 2)) == 31
    # the default 256-token budget (a full 256-request decode batch is as large) frees memory for KV
    small = ThroughputModel(m, ThroughputConfig(latency_budget_s=-1))
    assert small.activation_workspace_bytes() == pytest.approx(256 * (2 * 8192 + 3 * 28672) * 2)
    assert small.resident(t4, 8) == 69
    # a decode batch cap above the budget sizes the workspace instead
    wide = ThroughputModel(m, ThroughputConfig(latency_budget_s=-1, max_batch=512))
    assert wide.activation_workspace_bytes() == pytest.approx(512 * (2 * 8192 + 3 * 28672) * 2)
    assert tm.kv_budget_bytes(t4, 0) == 0.0
