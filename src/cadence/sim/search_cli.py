"""`cadence search`: find the cheapest deployments that meet an SLO, by simulation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cadence.sim.cli import add_deployment_arguments


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_deployment_arguments(parser)
    parser.set_defaults(model="llama3-70b")
    parser.add_argument("--max-gpus", type=int, default=16, help="GPU budget")
    parser.add_argument("--tp", type=_ints, default=(1, 2, 4, 8), help="TP degrees, comma-separated")
    parser.add_argument("--pp", type=_ints, default=(1, 2), help="pipeline stages, comma-separated")
    parser.add_argument("--replicas", type=_ints, default=(1, 2, 4), help="replica counts, comma-separated")
    parser.add_argument("--policies", default="sarathi,vllm", help="scheduler policies, comma-separated")
    parser.add_argument("--budgets", type=_ints, default=(512, 2048), help="token budgets, comma-separated")
    parser.add_argument("--max-batch", type=_ints, default=(128, 256), help="max batch sizes, comma-separated")
    parser.add_argument("--profiles", default=None,
                        help="TP=CSV pairs, comma-separated (e.g. 4=p4.csv,8=p8.csv); others use the roofline")
    parser.add_argument("--workload", default="W2", help="W2 or W3")
    parser.add_argument("--num-requests", type=int, default=400, help="requests per simulated point, per replica")
    parser.add_argument("--min-duration", type=float, default=120.0,
                        help="simulated seconds of arrivals per point, at least (requests grow with the rate)")
    parser.add_argument("--p99-tbt", type=float, default=0.25, help="SLO: P99 time between tokens (s)")
    parser.add_argument("--max-sched-delay", type=float, default=2.0, help="SLO: median scheduling delay (s)")
    parser.add_argument("--precision", type=float, default=0.1, help="relative width of each capacity bracket")
    parser.add_argument("--processes", type=int, default=2, help="configurations evaluated in parallel")
    parser.add_argument("--scale-replicas", action="store_true",
                        help="simulate one replica per shape, scale by the replica count, verify the best in full")
    parser.add_argument("--prices", default=None, help="price table YAML (default: cadence/configs/prices.yaml)")
    parser.add_argument("--out", default="results/search", help="directory for search.json and pareto.png")


def run(args: argparse.Namespace) -> int:
    from cadence.core.metrics import ServiceSLO
    from cadence.sim.errors import SimInputError
    from cadence.sim.search import PRICES_FILE, SearchConfig, SearchSpace, load_prices, plot_front, run_search

    try:
        profiles = None
        if args.profiles:
            profiles = {int(k): v for k, v in (p.split("=", 1) for p in args.profiles.split(","))}
        space = SearchSpace(args.model, args.gpu, args.max_gpus, args.tp, args.pp, args.replicas,
                            tuple(args.policies.split(",")), args.budgets, args.max_batch, profiles)
        cfg = SearchConfig(ServiceSLO(p99_tbt=args.p99_tbt, median_scheduling_delay=args.max_sched_delay),
                           args.workload, args.num_requests, min_duration_s=args.min_duration, precision=args.precision, processes=args.processes,
                           scale_replicas=args.scale_replicas)
        prices = load_prices(args.prices or PRICES_FILE)

        def show(row: dict) -> None:
            cap = row.get("capacity_rps")
            what = row.get("error") or (f"{cap:.3g} req/s" if cap else "below the smallest rate")
            print(f"  {row['label']}: {what} ({row.get('search_s', 0):.1f} s)", file=sys.stderr)

        result = run_search(space, cfg, prices, show)
    except (SimInputError, ValueError, FileNotFoundError) as exc:
        print(f"cadence search: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot_front(result, out / "pareto.png")
    best = result["best"]
    print(f"{result['configs']} configurations in {result['wall_s']:.1f} s")
    if best:
        print(f"best: {best['label']}: {best['capacity_rps']:.3g} req/s on {best['gpus']} GPUs, "
              f"{best['requests_per_dollar']:.0f} requests per dollar")
    else:
        print("no configuration met the SLO at any rate tried")
    print(f"results in {out}")
    return 0
