"""Simulator speed: 16,000 W2 requests at one replica's capacity, one process, on this CPU.

Capacity first (bench's bisection, every point a simulation): llama3-8b on one H100 (analytic
roofline profile unless --profile), Sarathi with a 512-token budget, strict SLO (P99 TBT <= 50 ms,
median scheduling delay <= 2 s). Then 16,000 requests at that rate, timed. Writes
benchmarks/results/sim_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from cadence.bench.results import environment
from cadence.core import workload as wl
from cadence.core.metrics import ServiceSLO
from cadence.sim.deployment import Deployment
from cadence.sim.run import simulate
from cadence.sim.search import SearchConfig, evaluate_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--requests", type=int, default=16000)
    ap.add_argument("--capacity-requests", type=int, default=4000,
                    help="requests per capacity point (short runs end before an overload's backlog shows)")
    ap.add_argument("--exact", action="store_true", help="also time the run with decode windows off")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sim_speed.json"))
    args = ap.parse_args()
    d = Deployment("llama3-8b", "H100", policy="sarathi", max_num_batched_tokens=512, max_num_seqs=256,
                   profile=args.profile)
    slo = ServiceSLO(p99_tbt=0.05, median_scheduling_delay=2.0)
    t0 = time.perf_counter()
    cap = evaluate_config(d, SearchConfig(slo, num_requests=args.capacity_requests, min_duration_s=0, precision=0.05, processes=1))
    cap_s = time.perf_counter() - t0
    rate = cap["capacity_rps"]
    specs = wl.named("W2", args.requests, rate, seed=0)
    runs = {}
    for exact in ([False, True] if args.exact else [False]):
        t0 = time.perf_counter()
        out = simulate(Deployment(**{**d.to_dict(), "exact_steps": exact}), specs)
        total = time.perf_counter() - t0
        out.result.check_conservation()
        s = out.summary
        runs["exact_steps" if exact else "decode_windows"] = {
            "sim_run_s": out.sim_seconds, "total_with_setup_and_summary_s": total,
            "steps": out.result.steps, "windows": out.result.windows,
            "p99_tbt_s": s["tbt"]["p99"], "p50_ttft_s": s["ttft"]["p50"],
            "median_sched_delay_s": s["scheduling_delay"]["p50"],
            "meets_slo_at_16k": not slo.check(s),
            "output_tokens_per_s": s["throughput"]["output_tokens_per_s"], "simulated_s": s["duration_s"],
        }
        print(json.dumps(runs, indent=1))
    doc = {
        "benchmark": "sim_speed", "environment": environment(), "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "deployment": d.to_dict(), "slo": {"p99_tbt": 0.05, "median_scheduling_delay": 2.0},
        "capacity_rps": rate, "capacity_requests_per_point": args.capacity_requests, "capacity_search_s": cap_s, "capacity_points": cap["points"],
        "workload": wl.describe(specs) | {"name": "W2", "rate": rate, "seed": 0},
        "runs": runs, "target_s": 10.0,
        "note": "profile: analytic roofline (no H100 profile yet)" if args.profile is None else f"profile {args.profile}",
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"capacity {rate:.3g} req/s; {args.requests} requests simulated in "
          f"{runs['decode_windows']['sim_run_s']:.2f} s -> {args.out}")


if __name__ == "__main__":
    main()
