"""Simulator fidelity against the real engine on the GPU (not run yet: needs the H100).

For each (model, policy, rate) point: start `cadence serve` with the model's dummy weights and the
policy, run `cadence bench` with W2 at the rate (fixed seed, so the same trace), then simulate the
very same trace with `cadence sim` from the model's measured profile, and compare P50 TTFT, P50 TBT,
P99 TBT and output throughput (target: each within 5%). Writes benchmarks/results/sim_fidelity.json.

Usage on the GPU machine, after profiling (see docs/sim.md):
    python benchmarks/sim_fidelity.py --point llama3-8b:sarathi:4 --point llama3-8b:vllm:3 \\
        --point qwen3-0.6b:sarathi:20 --requests 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METRICS = (("P50 TTFT", "ttft", "p50"), ("P50 TBT", "tbt", "p50"), ("P99 TBT", "tbt", "p99"))


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"cadence serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError("cadence serve did not become ready")


def _cadence(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cadence.cli", *args], check=True, cwd=ROOT)


def run_point(model: str, policy: str, rate: float, n: int, budget: int, port: int, out: Path) -> dict:
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([sys.executable, "-m", "cadence.cli", "serve", "--model", model, "--load-format", "dummy",
                              "--policy", policy, "--max-num-batched-tokens", str(budget), "--port", str(port)],
                             cwd=ROOT)
    try:
        _wait_ready(url, serve)
        real = out / f"{model}_{policy}_{rate:g}_bench"
        _cadence("bench", "--base-url", url, "--workload", "W2", "--num-prompts", str(n), "--request-rate", str(rate),
                 "--seed", "0", "--prompt-format", "ids", "--result-dir", str(real), "--no-plots")
    finally:
        serve.terminate()
        serve.wait(60)
    sim = out / f"{model}_{policy}_{rate:g}_sim"
    profile = ROOT / "benchmarks" / "profiles" / f"{model}_tp1_h100.csv"
    _cadence("sim", "--model", model, "--profile", str(profile), "--policy", policy, "--max-num-batched-tokens",
             str(budget), "--workload", "W2", "--num-requests", str(n), "--rate", str(rate), "--seed", "0",
             "--out", str(sim))
    a = json.loads((real / "summary.json").read_text())["summary"]
    b = json.loads((sim / "summary.json").read_text())["summary"]
    row = {"model": model, "policy": policy, "rate": rate, "requests": n, "metrics": {}}
    pairs = [(name, a[k].get(p), b[k].get(p)) for name, k, p in METRICS]
    pairs.append(("output tok/s", a["throughput"]["output_tokens_per_s"], b["throughput"]["output_tokens_per_s"]))
    for name, measured, simulated in pairs:
        err = abs(simulated - measured) / measured if measured else None
        row["metrics"][name] = {"measured": measured, "simulated": simulated, "rel_error": err,
                                "within_5pct": err is not None and err <= 0.05}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", action="append", required=True, help="model:policy:rate")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--port", type=int, default=8011)
    args = ap.parse_args()
    out = RESULTS / "sim_fidelity_runs"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.point:
        model, policy, rate = spec.split(":")
        rows.append(run_point(model, policy, float(rate), args.requests, args.budget, args.port, out))
        print(json.dumps(rows[-1], indent=1))
    from cadence.bench.results import environment

    (RESULTS / "sim_fidelity.json").write_text(json.dumps({"benchmark": "sim_fidelity", "environment": environment(),
                                                           "points": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
