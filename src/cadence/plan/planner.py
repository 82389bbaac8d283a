"""`plan()`: baselines, warm start, Helix MILP under a grid of capacity tables; candidates scored by a short simulation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from cadence.plan.capacity import placement_capacity
from cadence.plan.cluster import Cluster
from cadence.plan.cover_bound import cover_bound, layer_work_bound
from cadence.plan.errors import PlanError
from cadence.plan.heuristics import BASELINES, mixed_chains
from cadence.plan.lanes import lane_search
from cadence.plan.local_search import improve
from cadence.plan.milp import MilpConfig, MilpResult, solve_milp
from cadence.plan.placement import FlowSolution, Placement, balanced_flow, max_flow
from cadence.plan.simulator import SimConfig, default_routing, simulate
from cadence.plan.stages import stage_placement
from cadence.plan.throughput import ThroughputModel

# round-trip latency budgets (s) the planner tries when none is given: each gives its own capacity table
LATENCY_GRID = (0.15, 0.2, 0.3, 0.45, 0.7, 1.0, 1.5, 2.2, 3.3)
# the short simulation that scores candidate placements (the benchmark's runs are longer)
SELECT_SIM = SimConfig(duration_s=400.0, warmup_s=200.0)
# candidates are first screened by a simulation this share as long; the best of them are scored in full
SCREEN_SHARE, RESCORED = 0.4, 6
# seconds a table's layer-cover bound and its stage-structured placement may take (many GPU types need them)
COVER_S, STAGE_S = 10.0, 20.0


@dataclass(frozen=True)
class PlanResult:
    milp: MilpResult
    baselines: dict[str, tuple[Placement, FlowSolution]] = field(hash=False)
    layer_work_bound: float = 0.0
    warm_search_s: float = 0.0
    latency_budget_s: float = 0.0  # the budget of the MILP placement's capacity table
    baseline_budgets: dict[str, float] = field(default_factory=dict, hash=False)
    tm: ThroughputModel | None = field(default=None, hash=False, compare=False)
    tried: dict[float, float] = field(default_factory=dict, hash=False)  # budget -> MILP placement's score
    baseline_tms: dict[str, ThroughputModel] = field(default_factory=dict, hash=False, compare=False)
    score_s: float = 0.0  # seconds spent scoring candidates by simulation
    lane_s: float = 0.0  # seconds of lane search under the placement capacity model
    lanes: list[tuple[float, float]] = field(default_factory=list, hash=False)  # (model, simulated) per lane candidate
    # every candidate run with IWRR that was scored: (method, planned max flow under its table, placement
    # capacity model, screened simulated score), for the rank correlation of both models with the simulator
    scored: list[tuple[str, float, float, float]] = field(default_factory=list, hash=False)


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


def _candidates(cluster: Cluster, tm: ThroughputModel, partial: bool, cover: float) -> tuple[dict, list[Placement]]:
    """The baselines under this capacity table, and the warm starts the MILP may begin from: the baselines
    it can express, our mixed-chain heuristic and the stage-structured placement of largest max flow."""
    baselines = {}
    for name, build in BASELINES.items():
        p = build(cluster, tm)
        baselines[name] = (p, balanced_flow(cluster, p, tm))
    candidates = [p for p, _ in baselines.values() if not p.partial_inference or partial]
    candidates.append(mixed_chains(cluster, tm))
    staged = stage_placement(cluster, tm, time_limit_s=STAGE_S, upper=cover)
    if staged is not None:
        candidates.append(staged[0])
    # a separate-pipelines start must drop its grouping: the MILP lets pipelines share
    return baselines, [Placement(p.method, p.ranges, p.num_layers, partial) for p in candidates]


class _Scores:
    """Simulated output tokens/s of a placement run under a routing (the max flow itself when no simulation
    is asked for). A placement built under several tables, or by several heuristics, is simulated once per
    run length, routing and routing flow."""

    def __init__(self, cluster: Cluster, tm: ThroughputModel) -> None:
        self.cluster, self.tm = cluster, tm
        self.memo: dict[tuple, float] = {}

    def __call__(self, placement: Placement, flow: FlowSolution, sim: SimConfig | None,
                 routing: str | None = None) -> float:
        if sim is None or flow.value <= 0:
            return flow.value
        routing = routing or default_routing(placement)
        key = (sim, routing, placement.partial_inference, tuple(sorted(placement.ranges.items())),
               tuple(sorted((placement.groups or {}).items())),
               tuple(sorted(flow.edges.items())) if routing == "iwrr" else ())  # SWARM routes without the flow
        if key not in self.memo:
            self.memo[key] = simulate(self.cluster, self.tm, placement, flow, sim, routing=routing).throughput
        return self.memo[key]


def plan(cluster: Cluster, tm: ThroughputModel, config: MilpConfig | None = None,
         search_share: float = 0.1, budgets_tried: int = 2, select_by: SimConfig | None = SELECT_SIM,
         lane_search_s: float = 60.0, lanes_simulated: int = 4, screen_share: float = SCREEN_SHARE,
         rescored: int = RESCORED) -> PlanResult:
    """Place the model. With no latency budget given (0), every budget of LATENCY_GRID (and none) gives a
    capacity table; baselines, our mixed-chain heuristic and the stage-structured placement of largest max
    flow (`stages.stage_placement`, bisected below the table's layer-cover bound) are built and scored
    under each. The score is a short simulation (`select_by`; None scores by max flow): each baseline keeps
    its best budget; every warm-start candidate is scored as the MILP's placement runs (IWRR over its
    balanced flow). The `budgets_tried` budgets with the best-scoring candidates each get a short local search from their
    candidate with the largest max flow and the Helix MILP, sharing the time limit. The MILP placement
    that simulates best wins; where the best-scoring candidate of its budget simulates better, that
    candidate is returned (`returned` names it), as the max-flow fallback already did for the MILP's start.

    Lane-built placements (`lanes.lane_search`, `lane_search_s` seconds, ranked by the placement capacity
    model) join in: the `lanes_simulated` best by that model are simulated with their own routing, each is
    offered to every MILP as a warm start (by max flow under its table), and the best of them is returned
    (`returned` = "lanes") where it simulates better than everything else. So is a baseline routed by IWRR
    (separate pipelines, with their grouping) that simulates better than all of that.

    Screening: under every table, baselines and warm starts are first simulated `screen_share` as long as
    `select_by`; each baseline's best table and the `rescored` best warm starts are then simulated in full,
    and only full scores are compared from there on (`screen_share` 1 scores everything in full)."""
    cfg = config or MilpConfig()
    check_fits(cluster, tm)
    score = _Scores(cluster, tm)
    screen = select_by
    if select_by is not None and screen_share < 1.0:
        screen = replace(select_by, duration_s=select_by.duration_s * screen_share,
                         warmup_s=select_by.warmup_s * screen_share)
    budgets = [tm.config.latency_budget_s] if tm.config.latency_budget_s != 0 else [-1.0, *LATENCY_GRID]
    baselines: dict[str, tuple[Placement, FlowSolution]] = {}
    baseline_budgets: dict[str, float] = {}
    baseline_scores: dict[str, float] = {}
    warms: list[tuple] = []  # (score, max flow, budget, table, placement, its balanced flow)
    scored: list[tuple[str, float, float, float]] = []
    t_score = time.perf_counter()
    covers: dict[float, float] = {}
    for lam in budgets:
        tml = tm.at_latency(lam) if lam != tm.config.latency_budget_s else tm
        covers[lam] = cover_bound(cluster, tml, time_limit_s=COVER_S)
        base, starts = _candidates(cluster, tml, cfg.partial_inference, covers[lam])
        for name, (p, f) in base.items():
            screened = score(p, f, screen)
            if name not in baselines or screened > baseline_scores[name]:
                baselines[name], baseline_budgets[name], baseline_scores[name] = (p, f), lam, screened
        # the warm start is the candidate that scores best as the MILP's placement would run (IWRR over
        # its balanced flow): under a table that mis-ranks placements, max flow alone picks poor starts
        for warm in starts:
            warm_flow = balanced_flow(cluster, warm, tml)
            warms.append((score(warm, warm_flow, screen, "iwrr"), warm_flow.value, lam, tml, warm, warm_flow))
            if warm_flow.value > 0:
                model = placement_capacity(cluster, tm, warm, routing=warm_flow).throughput
                scored.append((f"{warm.method}@{lam}", warm_flow.value, model, warms[-1][0]))
    baseline_scores = {name: score(p, f, select_by) for name, (p, f) in baselines.items()}

    def in_full(w: tuple) -> tuple:
        return (score(w[4], w[5], select_by, "iwrr"), *w[1:])

    warms.sort(key=lambda w: (-w[0], -w[1]))
    top = sorted((in_full(w) for w in warms[:rescored]), key=lambda w: (-w[0], -w[1]))
    warms = top + warms[len(top):]  # screened scores after the full ones: only those pick tables first
    score_s = time.perf_counter() - t_score
    t_lanes = time.perf_counter()
    lanes = lane_search(cluster, tm, lane_search_s, keep=lanes_simulated) if lane_search_s > 0 else []
    lane_scored = [(score(p, f, select_by, "iwrr"), model, p, f) for model, p, f in lanes]
    lane_scored.sort(key=lambda t: -t[0])
    # the rank correlation compares screened scores throughout (lane candidates are screened for it too)
    scored += [("lanes", 0.0, model, score(p, f, screen, "iwrr")) for _, model, p, f in lane_scored]
    lane_s = time.perf_counter() - t_lanes
    if max(w[1] for w in warms) <= 0:
        raise PlanError(f"no placement of {tm.model.name!r} carries any flow on {cluster.name!r}: "
                        "nodes that could hold the model cannot reach each other or the coordinator")
    # the `budgets_tried` budgets whose best candidate simulates best; under each, HiGHS starts from the
    # candidate with the largest max flow (its own objective) and the planner keeps whichever of the MILP's
    # placement and the best-simulating candidate simulates better
    chosen: list[tuple[float, Placement, float, ThroughputModel, Placement]] = []
    for w in warms:
        if w[2] not in {c[2] for c in chosen} and len(chosen) < max(1, budgets_tried):
            # the lane candidates are candidates of every table: they start the MILP where their max flow is largest
            pool = [(v[1], v[4]) for v in warms if v[2] == w[2]]
            pool += [(max_flow(cluster, p, w[3]).value, p) for _, _, p, _ in lane_scored]
            flow_best = max(pool, key=lambda v: v[0])[1]
            w = in_full(w)  # a table picked by a screened score (fewer tables than `rescored` starts)
            chosen.append((w[0], w[4], w[2], w[3], flow_best))
    best: tuple[MilpResult, float, ThroughputModel, float] | None = None
    tried: dict[float, float] = {}
    search_total = 0.0
    for warm_score, first, lam, tml, warm in chosen:
        share = cfg.time_limit_s / len(chosen)
        t0 = time.perf_counter()
        budget = share * search_share
        if budget > 0:
            searched = improve(cluster, tml, warm, budget, seed=cfg.seed)
            if max_flow(cluster, searched, tml).value > max_flow(cluster, warm, tml).value:
                warm = Placement(f"{warm.method}+search", searched.ranges, warm.num_layers, warm.partial_inference)
        search_s = time.perf_counter() - t0
        search_total += search_s
        remaining = MilpConfig(**{**cfg.__dict__, "time_limit_s": max(1.0, share - search_s)})
        # the tables the MILP runs under get more time on the cover bound, from where it stopped: it is
        # their reported gap
        cover = cover_bound(cluster, tml, time_limit_s=3 * COVER_S, upper=covers[lam])
        result = solve_milp(cluster, tml, warm, remaining, cover=cover)
        result = replace(result, flow=balanced_flow(cluster, result.placement, tml))  # IWRR routes by it
        got = score(result.placement, result.flow, select_by, "iwrr")
        if got < warm_score:  # by the planner's own score a candidate was better: return it
            start = Placement("helix-milp", first.ranges, first.num_layers, first.partial_inference)
            result = replace(result, placement=start, flow=balanced_flow(cluster, start, tml), returned=first.method)
            got = warm_score
        tried[lam] = got
        if best is None or got > best[3]:
            best = (result, lam, tml, got)
    assert best is not None
    result, lam, tml, got = best
    if lane_scored and lane_scored[0][0] > got:  # a lane-built placement simulates best: return it
        _, _, p, f = lane_scored[0]
        result = replace(result, placement=Placement("helix-milp", p.ranges, p.num_layers, p.partial_inference),
                         flow=f, returned="lanes")
        got = lane_scored[0][0]
    # a baseline the MILP cannot express (separate pipelines keep each token inside its pipeline) that
    # simulates better under IWRR is returned as it is, its grouping included: never worse than a baseline
    for name, (p, f) in baselines.items():
        if (default_routing(p) == "iwrr" and baseline_scores[name] > got
                and (not p.partial_inference or cfg.partial_inference)):
            result = replace(result, placement=Placement("helix-milp", p.ranges, p.num_layers, p.partial_inference,
                                                         p.groups), flow=f, returned=name)
            got = baseline_scores[name]
    return PlanResult(milp=result, baselines=baselines, layer_work_bound=layer_work_bound(cluster, tml),
                      warm_search_s=search_total, latency_budget_s=lam, baseline_budgets=baseline_budgets,
                      tm=tml, tried=tried, baseline_tms={n: tm.at_latency(b) for n, b in baseline_budgets.items()},
                      score_s=score_s, lane_s=lane_s, lanes=[(m, s) for s, m, _, _ in lane_scored], scored=scored)
