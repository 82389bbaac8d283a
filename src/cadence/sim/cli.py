"""`cadence sim`: simulate a deployment of the engine on a CPU from an operator profile."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path

from cadence.core import workload as wl
from cadence.sim.errors import SimInputError
from cadence.sim.hardware import SKUS
from cadence.sim.router import ROUTERS
from cadence.sim.shapes import SIM_SHAPES


def add_deployment_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("deployment")
    g.add_argument("--model", default="llama3-8b", choices=sorted(SIM_SHAPES), help="model shape")
    g.add_argument("--gpu", default="H100", choices=sorted(SKUS), help="GPU SKU")
    g.add_argument("--profile", default=None,
                   help="operator profile CSV from `cadence profile` (default: analytic roofline of the GPU)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_deployment_arguments(parser)
    g = parser.add_argument_group("replicas")
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel degree")
    g.add_argument("--pp", type=int, default=1, help="pipeline stages")
    g.add_argument("--replicas", type=int, default=1, help="replicas behind the router")
    g.add_argument("--router", default="round_robin", choices=ROUTERS, help="global router")
    g.add_argument("--policy", default="sarathi", choices=("sarathi", "vllm", "orca", "static"))
    g.add_argument("--max-num-batched-tokens", type=int, default=2048, help="token budget of a step")
    g.add_argument("--max-num-seqs", type=int, default=256, help="most requests running at once")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument("--exact-steps", action="store_true", help="no decode windows: every step through the scheduler")
    g.add_argument("--async-scheduling", action="store_true",
                   help="the engine's async scheduling: a step lasts the longer of host and device work")
    g.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="steps run eagerly (the engine's --enforce-eager): no padding to graph buckets")
    g.add_argument("--no-piecewise-graphs", dest="piecewise_graphs", action="store_false",
                   help="the engine's --no-piecewise-graphs: steps with prefill tokens run eagerly")
    w = parser.add_argument_group("workload")
    w.add_argument("--workload", default="W2", help="W1, W2 or W3 (WORKLOADS.md)")
    w.add_argument("--trace", default=None, help="CSV trace (num_prefill_tokens,num_decode_tokens[,arrived_at])")
    w.add_argument("--num-requests", type=int, default=1000)
    w.add_argument("--rate", type=float, default=math.inf, help="requests/s (inf: all at once)")
    w.add_argument("--arrivals", default="poisson", choices=("poisson", "gamma", "constant", "trace"))
    w.add_argument("--cv", type=float, default=1.0, help="gamma arrivals' coefficient of variation")
    w.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="result directory (default results/sim-<time>)")
    parser.add_argument("--plots", action="store_true", help="draw the run's plots")


def deployment_from_args(args: argparse.Namespace):
    from cadence.sim.deployment import Deployment

    return Deployment(args.model, args.gpu, args.tp, args.pp, args.replicas, args.policy,
                      args.max_num_batched_tokens, args.max_num_seqs, args.router, args.block_size,
                      args.gpu_memory_utilization, args.profile, args.exact_steps, args.async_scheduling,
                      args.cuda_graphs, args.piecewise_graphs)


def workload_from_args(args: argparse.Namespace) -> tuple[list[wl.RequestSpec], dict]:
    arrivals = wl.Arrivals(args.arrivals, args.rate, args.cv)
    if args.trace:
        if not Path(args.trace).is_file():
            raise SimInputError(f"trace {args.trace} does not exist")
        specs = wl.load_csv_trace(args.trace, args.num_requests)
        specs = wl.assign_arrivals(specs, arrivals, args.seed)
        name = args.trace
    else:
        specs = wl.named(args.workload, args.num_requests, args.rate, args.seed, arrivals)
        name = args.workload.upper()
    if not specs:
        raise SimInputError(f"the workload {name} has no requests (empty trace?)")
    doc = wl.describe(specs) | {"name": name, "arrivals": asdict(arrivals), "seed": args.seed}
    return specs, doc


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from cadence.bench.table import render
    from cadence.sim.run import simulate, write

    try:
        d = deployment_from_args(args)
        specs, doc = workload_from_args(args)
        out = simulate(d, specs)
    except (SimInputError, ValueError, FileNotFoundError) as exc:
        print(f"cadence sim: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out or f"results/sim-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    write(out_dir, d, out, doc, plots=args.plots)
    print(render(out.summary, out.notes, title=f"cadence sim: {d.label()}"))
    print(f"\nresults in {out_dir}")
    return 0
