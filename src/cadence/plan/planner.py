"""`plan()`: baselines, warm start, Helix MILP; every placement scored by the same max flow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cadence.plan.cluster import Cluster
from cadence.plan.errors import PlanError
from cadence.plan.heuristics import BASELINES, mixed_chains
from cadence.plan.local_search import improve
from cadence.plan.milp import MilpConfig, MilpResult, layer_work_bound, solve_milp
from cadence.plan.placement import FlowSolution, Placement, max_flow
from cadence.plan.throughput import ThroughputModel


@dataclass(frozen=True)
class PlanResult:
    milp: MilpResult
    baselines: dict[str, tuple[Placement, FlowSolution]] = field(hash=False)
    layer_work_bound: float = 0.0
    warm_search_s: float = 0.0


def check_fits(cluster: Cluster, tm: ThroughputModel) -> None:
    """A model that no set of nodes can hold gets an error naming the shortfall."""
    m = tm.model
    holdable = sum(tm.max_layers(n) for n in cluster.nodes)
    if holdable < m.num_layers:
        need = m.num_layers * m.layer_bytes / 1e9
        have = sum(n.memory_bytes for n in cluster.nodes) * tm.config.weight_share / 1e9
        raise PlanError(
            f"model {m.name!r} fits nowhere: its {m.num_layers} layers need {need:.1f} GB of weights, the cluster "
            f"offers {have:.1f} GB at weight share {tm.config.weight_share} (room for {holdable} layers)"
        )


def plan(cluster: Cluster, tm: ThroughputModel, config: MilpConfig | None = None,
         search_share: float = 0.1) -> PlanResult:
    """Place the model: baselines and our mixed-chain heuristic, a short local search from the best of
    them, then the Helix MILP warm-started from that, for the rest of the time limit."""
    cfg = config or MilpConfig()
    check_fits(cluster, tm)
    baselines = {}
    for name, build in BASELINES.items():
        p = build(cluster, tm)
        baselines[name] = (p, max_flow(cluster, p, tm))
    chains = mixed_chains(cluster, tm)
    candidates = [p for p, _ in baselines.values() if not p.partial_inference or cfg.partial_inference]
    candidates.append(chains)
    # a separate-pipelines start must drop its grouping: the MILP lets pipelines share
    candidates = [Placement(p.method, p.ranges, p.num_layers, cfg.partial_inference) for p in candidates]
    warm = max(candidates, key=lambda p: max_flow(cluster, p, tm).value)
    if max_flow(cluster, warm, tm).value <= 0:
        raise PlanError(f"no placement of {tm.model.name!r} carries any flow on {cluster.name!r}: "
                        "nodes that could hold the model cannot reach each other or the coordinator")
    t0 = time.perf_counter()
    budget = cfg.time_limit_s * search_share
    if budget > 0:
        searched = improve(cluster, tm, warm, budget, seed=cfg.seed)
        if max_flow(cluster, searched, tm).value > max_flow(cluster, warm, tm).value:
            warm = Placement(f"{warm.method}+search", searched.ranges, warm.num_layers, warm.partial_inference)
    search_s = time.perf_counter() - t0
    remaining = MilpConfig(**{**cfg.__dict__, "time_limit_s": max(1.0, cfg.time_limit_s - search_s)})
    result = solve_milp(cluster, tm, warm, remaining)
    return PlanResult(milp=result, baselines=baselines, layer_work_bound=layer_work_bound(cluster, tm),
                      warm_search_s=search_s)
