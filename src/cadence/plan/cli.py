"""`cadence plan`: place a model on a heterogeneous cluster (Helix), compare baselines, simulate each."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace

from cadence.config_args import add_dataclass_args, dataclass_from_args
from cadence.plan.cluster import load_cluster
from cadence.plan.errors import PlanError
from cadence.plan.gpus import load_gpus
from cadence.plan.milp import MilpConfig
from cadence.plan.model import ModelSpec, get_model
from cadence.plan.placement import max_flow
from cadence.plan.planner import plan
from cadence.plan.report import draw_flow, placement_table
from cadence.plan.simulator import SimConfig, simulate
from cadence.plan.throughput import ThroughputConfig, ThroughputModel, load_measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cluster", help="cluster YAML file, or a shipped one: helix-24, helix-24-geo, helix-42")
    parser.add_argument("--model", default="llama-30b",
                        help="llama-30b, llama2-70b, llama3-8b, llama3-70b, qwen3-0.6b, or 'custom' with the shape flags")
    shape = parser.add_argument_group("custom model shape (with --model custom)")
    for flag in ("layers", "hidden", "heads", "kv-heads", "intermediate", "head-dim"):
        shape.add_argument(f"--{flag}", type=int, default=0)
    shape.add_argument("--bytes-per-param", type=float, default=2.0)
    parser.add_argument("--gpus", help="extra GPU spec table (YAML, same format as configs/gpus.yaml)")
    parser.add_argument("--throughput-table", help="measured tokens/s per layer count (CSV gpu,layers,tokens_per_s or YAML)")
    parser.add_argument("--no-simulate", action="store_true", help="skip the discrete-event simulation")
    parser.add_argument("--select-sim-s", type=float, default=400.0,
                        help="simulated seconds that score each candidate placement (0: score by max flow)")
    parser.add_argument("--png", help="write the MILP placement's flow graph here")
    parser.add_argument("--json", help="write placements, flows, gap and simulation results here")
    add_dataclass_args(parser, ThroughputConfig)
    add_dataclass_args(parser, MilpConfig)
    add_dataclass_args(parser, SimConfig, skip=("seed",))


def _model(args: argparse.Namespace) -> ModelSpec:
    if args.model != "custom":
        return get_model(args.model)
    if not (args.layers and args.hidden and args.heads):
        raise PlanError("--model custom needs --layers, --hidden and --heads (and --kv-heads, --intermediate)")
    return ModelSpec("custom", num_layers=args.layers, hidden=args.hidden, num_heads=args.heads,
                     num_kv_heads=args.kv_heads or args.heads, intermediate=args.intermediate or 4 * args.hidden,
                     head_dim=args.head_dim, bytes_per_param=args.bytes_per_param)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except PlanError as exc:
        print(f"cadence plan: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cluster = load_cluster(args.cluster, load_gpus(args.gpus))
    measured = load_measured(args.throughput_table) if args.throughput_table else None
    tm = ThroughputModel(_model(args), dataclass_from_args(ThroughputConfig, args), measured)
    milp_cfg = dataclass_from_args(MilpConfig, args)
    sim_cfg = dataclass_from_args(SimConfig, args)
    select = None
    if args.select_sim_s > 0:
        select = replace(sim_cfg, duration_s=args.select_sim_s, warmup_s=args.select_sim_s / 2, arrival_rate=0.0)
    result = plan(cluster, tm, milp_cfg, select_by=select)
    m = result.milp
    print(f"cluster {cluster.name}: {len(cluster.nodes)} nodes; model {tm.model.name} ({tm.model.num_layers} layers)")
    print(placement_table(cluster, tm, m.placement, m.flow))
    print(
        f"\nHelix MILP: max flow {m.objective:.0f} tokens/s  ({m.status}, {m.solve_s:.1f} s + "
        f"{result.warm_search_s:.1f} s warm-start search)\n"
        f"  bound {m.dual_bound:.0f} (layer cover {m.cover_bound:.0f}, HiGHS {m.highs_bound:.0f}, "
        f"LP relaxation {m.lp_bound:.0f}), gap {100 * m.gap:.1f}%; "
        f"warm start {m.warm_start} at {m.warm_value:.0f}{'' if m.moved else ' (not improved)'}; "
        f"{'' if m.returned == 'milp' else f'returned the {m.returned} candidate instead (it simulates better); '}"
        f"{m.num_binaries} binaries, {m.pruned_links} links pruned"
    )
    rows = {"helix-milp": (m.placement, m.flow), **result.baselines}
    report: dict = {"cluster": cluster.name, "model": asdict(tm.model), "throughput_config": asdict(tm.config),
                    "milp": {k: v for k, v in asdict(m).items() if k not in ("placement", "flow")},
                    "placements": {}}
    print(f"\n{'placement':<12} {'max flow':>9} {'sim tok/s':>10} {'TTFT p50':>9} {'TPOT p50':>9} {'hops':>5}")
    for name, (placement, flow) in rows.items():
        flow = flow if name != "separate" else max_flow(cluster, placement, tm)
        entry = {"max_flow": flow.value, "ranges": placement.ranges}
        line = f"{name:<12} {flow.value:>9.0f}"
        if not args.no_simulate:
            sim = simulate(cluster, tm, placement, flow, sim_cfg)
            entry["sim"] = asdict(sim)
            line += f" {sim.throughput:>10.0f} {sim.ttft_p50:>8.2f}s {sim.tpot_p50:>8.3f}s {sim.mean_hops:>5.1f}"
        report["placements"][name] = entry
        print(line)
    if args.png:
        draw_flow(cluster, m.placement, m.flow, args.png,
                  f"{cluster.name} / {tm.model.name}: Helix MILP, {m.objective:.0f} tokens/s")
        print(f"flow graph written to {args.png}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return 0
