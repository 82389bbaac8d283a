"""Search deployments of a 70B-class model (llama3-70b) on up to 16 simulated H100s, 2 processes.

Space: TP {2, 4, 8} x PP {1, 2} x replicas {1, 2, 4} x policy {sarathi, vllm} x token budget
{512, 2048} x max batch {128, 256}, within 16 GPUs; relaxed SLO (P99 TBT <= 250 ms, median
scheduling delay <= 2 s) on W2; capacity per configuration by bisection; ranked by requests per
dollar (src/cadence/configs/prices.yaml). One replica per shape is simulated and scaled by the
replica count; the best multi-replica rows are then simulated in full. Writes
benchmarks/results/sim_search_70b.json and benchmarks/results/sim_search_70b_pareto.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from cadence.bench.results import environment
from cadence.core.metrics import ServiceSLO
from cadence.sim.search import SearchConfig, SearchSpace, load_prices, plot_front, run_search

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--num-requests", type=int, default=300)
    ap.add_argument("--min-duration", type=float, default=120.0)
    args = ap.parse_args()
    space = SearchSpace("llama3-70b", "H100", 16, tp=(2, 4, 8), pp=(1, 2), replicas=(1, 2, 4),
                        policies=("sarathi", "vllm"), budgets=(512, 2048), max_batch=(128, 256))
    cfg = SearchConfig(ServiceSLO(p99_tbt=0.25, median_scheduling_delay=2.0), "W2", args.num_requests,
                       min_duration_s=args.min_duration, precision=0.1, processes=args.processes,
                       scale_replicas=True, verify_top=2)
    t0 = time.perf_counter()
    res = run_search(space, cfg, load_prices(),
                     lambda r: print(f"  {r['label']}: {r.get('capacity_rps')} req/s ({r.get('search_s', 0):.1f} s)",
                                     flush=True))
    wall = time.perf_counter() - t0
    res.update(benchmark="sim_search_70b", environment=environment(), cpus=os.cpu_count(), total_wall_s=wall,
               load_average_at_end=os.getloadavg(), target_s=300.0,
               note="analytic roofline profiles (no H100 profiles yet); collectives from the ring model")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sim_search_70b.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    plot_front(res, RESULTS / "sim_search_70b_pareto.png")
    best = res["best"]
    print(f"{res['configs']} configurations in {wall:.1f} s; best: {best['label']} "
          f"{best['capacity_rps']:.3g} req/s on {best['gpus']} GPUs, {best['requests_per_dollar']:.0f} requests/$")


if __name__ == "__main__":
    main()
