"""Serving capacity under TBT SLOs, Cadence's schedulers side by side (issue: stall-free scheduling
pays off). On the GPU machine: starts `cadence serve` with the llama3-8b shape (dummy weights) once
per policy and drives it over loopback with `cadence bench`'s own runner and capacity search.

    PYTHONPATH=src python benchmarks/capacity_study.py --out $OUT/capacity [--budget-s 1200]

Design of the sweep (to fit about 20 GPU minutes): every evaluated rate keeps its whole summary, and
each SLO's bisection re-reads those points, so the strict search (P99 TBT <= 50 ms) costs only the
points the relaxed one (<= 250 ms) did not already run. Each point is the first requests of one
seeded trace with arrival gaps scaled by 1/rate, so neighbouring points differ only in load. W3
points are a fixed count (its long prefills saturate at a few requests a second); W2 points take
enough requests that arrivals span --min-arrival-s (a first W2 run with 60 requests a point
arrived as a 0.5-s burst at 128 req/s, drained, and "passed": capacity 128 was an artefact).
Both SLOs also require a median scheduling delay <= 2 s, read from the server's own report. The
server runs its engine in its own process (`--engine-process`), so the HTTP front end never delays a
step by holding the GIL, and writes the engine's step trace next to its log.
Prefix caching is off: every point re-sends the same prompts to the same server, so with it on
every point after the first would find its prompts cached and skip their prefills (the first H100
run of this script did exactly that: benchmarks/NOTES.md, "Capacity under TBT SLOs").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

# vllm and orca prefill a whole prompt in one step: their budget must hold W3's longest prompt (16,000)
POLICIES = {"sarathi-512": ("sarathi", 512), "sarathi-2048": ("sarathi", 2048), "vllm": ("vllm", 17408),
            "orca": ("orca", 17408)}
MAX_MODEL_LEN = 17408  # W3: prompt <= 16,000 plus output <= 1,024
SLOS = {"relaxed": 0.250, "strict": 0.050}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def long_context_folder(model: str, out: Path) -> str:
    """A named shape's folder (config.json only, dummy weights) with a context that holds W3: the
    llama3-8b shape's own context is 8,192 tokens, under W3's 16,000-token prompts. Same shape,
    plain RoPE over 32,768 positions, so the per-step cost is unchanged (Llama-3.1-8B's shape)."""
    from cadence.models.config import NAMED_SHAPES

    if model not in NAMED_SHAPES or NAMED_SHAPES[model].get("max_position_embeddings", 0) >= MAX_MODEL_LEN:
        return model
    folder = out / f"{model}-32k"
    folder.mkdir(parents=True, exist_ok=True)
    arch = NAMED_SHAPES[model]["architectures"][0]
    cfg = {**NAMED_SHAPES[model], "max_position_embeddings": 32768,
           "model_type": "qwen3" if arch.startswith("Qwen3") else "llama", "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return str(folder)


def start_server(policy: str, budget: int, model: str, log: Path, max_model_len: int = MAX_MODEL_LEN,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    model_args = [] if model == "builtin" else ["--model", model]  # builtin: CPU smoke test only
    cmd = [sys.executable, "-m", "cadence.cli", "serve", *model_args, "--load-format", "dummy",
           "--policy", policy, "--max-num-batched-tokens", str(budget), "--port", str(port),
           "--max-queue", "100000", "--log-level", "warning", "--no-access-log", "--no-enable-prefix-caching",
           "--max-model-len", str(max_model_len), "--engine-process", *extra]
    # the engine in its own process (no GIL shared with the HTTP front end); its step trace for reading stalls
    env = {**os.environ, "CADENCE_STEP_TRACE": str(log.with_suffix(".steps.csv"))}
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise TimeoutError("server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_args(url: str, workload: str, num_prompts: int, seed: int) -> argparse.Namespace:
    from cadence.bench.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--url", url, "--workload", workload, "--num-prompts", str(num_prompts),
                              "--seed", str(seed), "--prompt-format", "ids", "--no-progress", "--no-plots",
                              "--warmup-requests", "8", "--request-rate", "1"])


def study_one(url: str, workload: str, args: argparse.Namespace, out: Path, deadline: float) -> dict:
    from cadence.bench import options
    from cadence.bench.capacity import CapacityConfig, point_summary, search_capacity
    from cadence.bench.cli import PreparedRun
    from cadence.bench.results import write_results
    from cadence.core import metrics as m
    from cadence.core import workload as wl

    n = args.requests_w3 if workload == "W3" else args.requests_w2
    window = args.min_arrival_s if workload == "W2" else 0.0
    cap = max(n, args.max_requests if window else n)
    bargs = bench_args(url, workload, cap, args.seed)
    prep = PreparedRun(bargs)  # one seeded trace; a point takes its first requests_at(rate)
    arr = options.arrivals(bargs)
    summaries: dict[float, dict] = {}

    def evaluate(rate: float) -> dict:
        if time.monotonic() > deadline:
            raise TimeoutError("study time budget spent")
        t0 = time.monotonic()
        prep.fresh_prompts(len(summaries))  # new contents per point: no prefix-cache carry-over
        count = requests_at(rate, n, window, cap)
        first = sorted(prep.specs, key=lambda s: s.request_id)[:count]
        specs = wl.assign_arrivals(first, arr.with_rate(rate), args.seed)
        result, _ = prep.execute(specs, f"{workload} {rate:.3g}/s")
        summary = m.summarize(result.records, prep.summary_options)
        write_results(out / workload / f"rate_{rate:.4g}", result.records, summary, config=prep.config(),
                      workload={"name": workload, "rate": rate, "n": count}, notes=result.notes,
                      deadlines=prep.summary_options.deadlines, plots=False)
        summaries[rate] = summary
        print(f"  {workload} rate {rate:.3g}: P99 TBT {summary['tbt'].get('p99', 0) * 1e3:.0f} ms, "
              f"median sched {summary['scheduling_delay'].get('p50', float('nan')):.2f} s, "
              f"P50 TTFT {summary['ttft'].get('p50', float('nan')):.2f} s ({time.monotonic() - t0:.0f} s)", flush=True)
        return summary

    if args.rates:  # fixed points only (to narrow an earlier bracket); capacity_plots summary reads them
        for rate in args.rates:
            evaluate(rate)
        return {"fixed_rates": {"capacity": None, "rates": args.rates}}
    found = {}
    for name, tbt in SLOS.items():  # relaxed first: its points seed the strict search
        slo = m.ServiceSLO(p99_tbt=tbt, median_scheduling_delay=2.0)
        cache = {r: point_summary(r, s, slo) for r, s in summaries.items()}
        cfg = CapacityConfig(slo, start_rate=args.start_rate, precision=args.precision, max_points=args.max_points)
        try:
            found[name] = search_capacity(evaluate, cfg, cache)
        except TimeoutError:
            passing = [r for r, p in cache.items() if p["ok"]]
            lo = max(passing, default=None)
            hi = min((r for r, p in cache.items() if not p["ok"] and (lo is None or r > lo)), default=None)
            found[name] = {"capacity": lo, "upper": hi, "bound": "time_budget", "converged": False,
                           "points": sorted(cache.values(), key=lambda p: p["rate"])}
    return found


def requests_at(rate: float, n: int, window_s: float, cap: int) -> int:
    """Requests in a point at `rate`: at least `n`, and enough that arrivals span `window_s`
    seconds (at most `cap`). A fixed count at a high rate arrives as a burst that drains before a
    queue can build, so an overloaded server would pass the scheduling-delay SLO; with a window,
    a server overloaded by a factor f delays the median request by about window/2 x (1 - 1/f)."""
    return min(cap, max(n, math.ceil(rate * window_s)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "capacity")
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--workloads", default="W3,W2")
    ap.add_argument("--requests-w3", type=int, default=60)
    ap.add_argument("--requests-w2", type=int, default=150)
    ap.add_argument("--min-arrival-s", type=float, default=30.0,
                    help="W2 points get enough requests that their arrivals span this many seconds")
    ap.add_argument("--max-requests", type=int, default=1500, help="W2 requests a point at most")
    ap.add_argument("--rates", type=float, nargs="+", default=None,
                    help="evaluate only these rates (no search), e.g. to narrow a bracket")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra argument for every `cadence serve` (repeatable), e.g. --serve-arg=--no-piecewise-graphs")
    ap.add_argument("--start-rate", type=float, default=1.0)
    ap.add_argument("--precision", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-points", type=int, default=8, help="new points per SLO search at most")
    ap.add_argument("--max-model-len", type=int, default=MAX_MODEL_LEN)
    ap.add_argument("--name", default=None, help="result file name (default capacity_<policies>)")
    ap.add_argument("--budget-s", type=float, default=1200.0, help="wall-clock budget of the whole study")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    policies = args.policies.split(",")
    served = long_context_folder(args.model, args.out)
    per_policy = args.budget_s / len(policies)
    name = args.name or "capacity_" + "_".join(p.replace("-", "") for p in policies)
    results = {}
    for key in policies:
        policy, budget = POLICIES[key]
        print(f"== {key}", flush=True)
        t0 = time.monotonic()
        proc, url = start_server(policy, budget, served, args.out / f"server-{key}.log", args.max_model_len,
                                 tuple(args.serve_arg))
        print(f"   server up in {time.monotonic() - t0:.0f} s", flush=True)
        deadline = t0 + per_policy
        try:
            results[key] = {w: study_one(url, w, args, args.out / key, deadline) for w in args.workloads.split(",")}
        finally:
            stop_server(proc)
        table = {k: {w: {s: r[s]["capacity"] for s in r} for w, r in v.items()} for k, v in results.items()}
        print(json.dumps(table), flush=True)
        write_result(name, {"benchmark": "capacity_study", "model": args.model,
                            "workload": {"names": args.workloads, "arrivals": "poisson", "seed": args.seed,
                                         "requests_per_point": {"W3": args.requests_w3, "W2": args.requests_w2},
                                         "w2_min_arrival_s": args.min_arrival_s,
                                         "w2_max_requests": args.max_requests},
                            "slo": {"p99_tbt_s": SLOS, "median_scheduling_delay_s": 2.0},
                            "policies": {k: {"policy": POLICIES[k][0], "max_num_batched_tokens": POLICIES[k][1]}
                                         for k in results},
                            "precision": args.precision, "max_points": args.max_points, "budget_s": args.budget_s,
                            "capacity_req_s": table, "searches": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
