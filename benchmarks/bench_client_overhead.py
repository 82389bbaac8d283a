"""The bench client's own overhead: CPU per request and per token, and timing error against scripted truth.

A scripted server (its own process, on loopback) streams tokens at known times; the client measures them.
Errors are |measured - scripted| for TTFT (from the scheduled arrival) and for every TBT.
Run: PYTHONPATH=src python benchmarks/bench_client_overhead.py  ->  benchmarks/results/bench_client_overhead.json
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from cadence.bench.client import EndpointConfig, Prompt
from cadence.bench.results import environment
from cadence.bench.runner import run_workload
from cadence.bench.scripted_server import Script, serve_in_subprocess
from cadence.core import metrics as m
from cadence.core.workload import RequestSpec


def scenario(url: str, script: Script, n: int, tokens: int, spacing: float, warmup: int) -> dict:
    specs = [RequestSpec(i, 8, tokens, i * spacing) for i in range(n)]
    prompts = [Prompt(8, text="a b c d e f g h")] * n
    res = run_workload(EndpointConfig(url, script.model), specs, prompts, warmup=warmup)
    recs = res.records
    ttft_err = [abs(m.ttft(r) - script.ttft) * 1e3 for r in recs if r.ok]
    tbt_err = [abs(g - script.tbt) * 1e3 for r in recs if r.ok for g in m.tbts(r)]
    lag = [m.dispatch_lag(r) * 1e3 for r in recs]
    end = min(r.token_times[-1] for r in recs if r.token_times)
    tokens_total = sum(r.output_tokens for r in recs)
    return {
        "requests": n,
        "tokens_per_request": tokens,
        "arrival_spacing_s": spacing,
        "peak_concurrent_streams": sum(r.arrival_time <= end for r in recs),
        "warm_connections": warmup > 0,
        "failed": sum(not r.ok for r in recs),
        "client_cpu_s": round(res.cpu_s, 4),
        "client_cpu_ms_per_request": round(res.cpu_s / n * 1e3, 3),
        "client_cpu_us_per_token": round(res.cpu_s / tokens_total * 1e6, 2),
        "ttft_error_ms": {k: round(v, 3) for k, v in m.distribution(ttft_err).items()},
        "tbt_error_ms": {k: round(v, 3) for k, v in m.distribution(tbt_err).items()},
        "dispatch_lag_ms": {k: round(v, 3) for k, v in m.distribution(lag).items()},
        "ttft_error_median_ms": round(statistics.median(ttft_err), 3),
        "tbt_error_median_ms": round(statistics.median(tbt_err), 3),
    }


def main() -> None:
    script = Script(ttft=0.05, tbt=0.05)
    with serve_in_subprocess(script) as url:
        runs = {
            "200_streams_warm": scenario(url, script, 200, 40, 0.005, warmup=200),
            "200_streams_cold_connections": scenario(url, script, 200, 40, 0.005, warmup=0),
            "1000_requests_200_per_s_warm": scenario(url, script, 1000, 20, 0.005, warmup=200),
        }
    doc = {
        "benchmark": "bench_client_overhead",
        "environment": environment()
        | {"cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        "script": {
            "ttft_s": script.ttft,
            "tbt_s": script.tbt,
            "server": "cadence.bench.scripted_server, own process",
        },
        "notes": "Shared 2-core machine with other work running; the server and client share the two cores.",
        "runs": runs,
    }
    out = Path(__file__).parent / "results" / "bench_client_overhead.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
