"""Simulator fidelity against the real engine on the GPU (issue 7).

Two halves, so the GPU only runs what needs it:

  measure (GPU machine): for each (model, policy, rate) point, start `cadence serve` with the model's
      dummy weights and the policy, run `cadence bench` with W2 at the rate (fixed seed: the same
      trace for every point of a model), keep the bench's result directory.
  compare (any CPU): for each measured directory, turn the bench's own requests.csv into a trace
      (prompt tokens, output tokens, arrival offset) so the simulator sees exactly the requests and
      arrival times the server saw, simulate it with `cadence sim` from the model's measured H100
      profile, and compare P50 TTFT, P50 TBT, P99 TBT and output throughput (target: each within 5%).
  probe (GPU machine): calibration runs, not fidelity points: short requests far apart on an idle
      server, whose bench results and step trace give the request's way in and out (`cadence
      profile --request-probe`), then a closed loop of clients whose step trace gives a serving
      engine's host time per step (`--host-trace`).

    python benchmarks/sim_fidelity.py measure --point llama3-8b:sarathi:4 --requests 200 --out $OUT/fid
    python benchmarks/sim_fidelity.py compare --runs benchmarks/results/sim_fidelity_runs
    python benchmarks/sim_fidelity.py probe --model llama3-8b --out $OUT/probe
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METRICS = (("P50 TTFT", "ttft", "p50"), ("P50 TBT", "tbt", "p50"), ("P99 TBT", "tbt", "p99"))


PROBE_WORKLOAD = ["--dataset-name", "random", "--input-len", "32", "--output-len", "4", "--arrival", "constant"]
LOADED_PROBE_WORKLOAD = ["--dataset-name", "random", "--input-len", "512", "--output-len", "96", "--arrival", "closed"]


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
        time.sleep(1)
    raise TimeoutError("cadence serve did not become ready")


def _cadence(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cadence.cli", *args], check=True, cwd=ROOT)


def point_name(model: str, policy: str, rate: float, budget: int) -> str:
    return f"{model}_{policy}{budget}_{rate:g}"


def measure_point(model: str, policy: str, rate: float, n: int, budget: int, port: int, out: Path,
                  max_model_len: int, serve_args: list[str] | None = None, tag: str = "",
                  workload: list[str] | None = None, name: str | None = None, trace: Path | None = None) -> Path:
    """Serve, bench at `rate` (W2 unless `workload` gives the bench's workload arguments), keep the
    bench's results in out/name and the engine's step trace (default out/steps_<name>.csv)."""
    url = f"http://127.0.0.1:{port}"
    name = name or point_name(model, policy, rate, budget) + tag
    log = open(out / f"serve_{name}.log", "wb")  # noqa: SIM115
    trace = trace or out / f"steps_{name}.csv"  # the engine's own step trace, written when it shuts down
    model_args = [] if model == "builtin" else ["--model", model]  # builtin: CPU smoke test only
    serve = subprocess.Popen([sys.executable, "-m", "cadence.cli", "serve", *model_args, "--load-format", "dummy",
                              "--policy", policy, "--max-num-batched-tokens", str(budget), "--port", str(port),
                              "--max-model-len", str(max_model_len), "--log-level", "warning", "--no-access-log",
                              *(serve_args or [])],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "CADENCE_STEP_TRACE": str(trace)})
    t0 = time.time()
    try:
        _wait_ready(url, serve)
        print(f"serve {model} {policy} ready in {time.time() - t0:.0f} s", flush=True)
        real = out / name
        _cadence("bench", "--base-url", url, *(workload or ["--workload", "W2"]), "--num-prompts", str(n),
                 "--request-rate", str(rate),
                 "--seed", "0", "--prompt-format", "ids", "--result-dir", str(real), "--no-plots", "--no-progress",
                 "--warmup-requests", "4")
    finally:
        serve.terminate()
        serve.wait(60)
    meta = {"model": model, "policy": policy, "rate": rate, "requests": n, "max_num_batched_tokens": budget,
            "max_model_len": max_model_len, "serve_args": serve_args or []}
    (real / "point.json").write_text(json.dumps(meta) + "\n")
    return real


def trace_from_bench(run_dir: Path, trace: Path) -> int:
    """The bench's requests (ok ones) as a sim trace: arrival offsets from the first arrival."""
    with open(run_dir / "requests.csv") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    rows.sort(key=lambda r: float(r["arrival_time"]))
    t0 = float(rows[0]["arrival_time"])
    with open(trace, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num_prefill_tokens", "num_decode_tokens", "arrived_at"])
        for r in rows:
            w.writerow([r["prompt_tokens"], r["output_tokens"], f"{float(r['arrival_time']) - t0:.6f}"])
    return len(rows)


def compare_point(run_dir: Path, profiles: Path, gpu: str, sim_out: Path, extra: list[str],
                  profile_suffix: str = "") -> dict:
    meta = json.loads((run_dir / "point.json").read_text())
    model, policy, budget = meta["model"], meta["policy"], meta["max_num_batched_tokens"]
    trace = sim_out / f"{run_dir.name}_trace.csv"
    n = trace_from_bench(run_dir, trace)
    sim = sim_out / f"{run_dir.name}_sim"
    profile = profiles / f"{model}_tp1_{gpu.lower()}{profile_suffix}.csv"
    if not profile.exists():
        return {**meta, "skipped": f"no profile {profile.name}"}
    _cadence("sim", "--model", model, "--gpu", gpu, "--profile", str(profile), "--policy", policy,
             "--max-num-batched-tokens", str(budget), "--trace", str(trace), "--arrivals", "trace",
             "--num-requests", str(n), "--out", str(sim), *extra)
    a = json.loads((run_dir / "summary.json").read_text())["summary"]
    b = json.loads((sim / "summary.json").read_text())["summary"]
    row = {**meta, "requests_compared": n, "metrics": {}}
    pairs = [(name, a[k].get(p), b[k].get(p)) for name, k, p in METRICS]
    pairs.append(("output tok/s", a["throughput"]["output_tokens_per_s"], b["throughput"]["output_tokens_per_s"]))
    for name, measured, simulated in pairs:
        err = (simulated - measured) / measured if measured else None
        row["metrics"][name] = {"measured": measured, "simulated": simulated, "rel_error": err,
                                "within_5pct": err is not None and abs(err) <= 0.05}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--point", action="append", required=True, help="model:policy:rate[:token budget]")
    m.add_argument("--requests", type=int, default=200)
    m.add_argument("--budget", type=int, default=4096, help="token budget (vllm: must hold W2's 4,096-token prompts)")
    m.add_argument("--port", type=int, default=8011)
    m.add_argument("--max-model-len", type=int, default=8192)
    m.add_argument("--out", type=Path, default=RESULTS / "sim_fidelity_runs")
    m.add_argument("--serve-arg", action="append", default=[], help="extra argument for cadence serve")
    m.add_argument("--tag", default="", help="suffix of the run's folder name (e.g. the serve args' meaning)")
    p = sub.add_parser("probe", help="calibration runs on the GPU, per model: an idle server (for `cadence "
                       "profile --request-probe`) and a loaded one (for `--host-trace`)")
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--rate", type=float, default=5.0, help="constant arrivals, far apart enough to find the engine idle")
    p.add_argument("--port", type=int, default=8012)
    p.add_argument("--clients", type=int, default=24, help="loaded probe: concurrent clients (closed loop)")
    p.add_argument("--loaded-requests", type=int, default=240)
    p.add_argument("--out", type=Path, default=RESULTS / "sim_request_probe")
    c = sub.add_parser("compare")
    c.add_argument("--runs", type=Path, default=RESULTS / "sim_fidelity_runs")
    c.add_argument("--profiles", type=Path, default=ROOT / "benchmarks" / "profiles")
    c.add_argument("--gpu", default="H100")
    c.add_argument("--sim-out", type=Path, default=Path("/tmp/sim_fidelity_sim"))
    c.add_argument("--result", type=Path, default=RESULTS / "sim_fidelity.json")
    c.add_argument("--label", default="", help="what this comparison's simulator is (written to the JSON)")
    c.add_argument("--sim-arg", action="append", default=[], help="extra argument for cadence sim")
    c.add_argument("--profile-suffix", default="", help="e.g. _served: the served-step calibrated profile")
    c.add_argument("--measured-on", default="H100 (device tool), cadence serve + cadence bench, W2, seed 0",
                   help="where and on which tree the runs were measured (written to the JSON)")
    args = ap.parse_args()
    if args.cmd == "measure":
        args.out.mkdir(parents=True, exist_ok=True)
        for spec in args.point:
            model, policy, rate, *budget = spec.split(":")
            try:
                measure_point(model, policy, float(rate), args.requests, int(budget[0]) if budget else args.budget,
                              args.port, args.out, args.max_model_len, args.serve_arg, args.tag)
            except Exception as exc:  # keep the other points
                print(f"point {spec} failed: {type(exc).__name__}: {exc}", flush=True)
        return
    if args.cmd == "probe":
        args.out.mkdir(parents=True, exist_ok=True)
        for model in args.model:  # short prompts, a few tokens each: the path around a step, not the step
            run = measure_point(model, "sarathi", args.rate, args.requests, 2048, args.port, args.out, 8192,
                                workload=PROBE_WORKLOAD, name=f"probe_{model}", trace=args.out / f"probe_{model}.steps.csv")
            print(f"probe {model}: {run}", flush=True)
            # loaded: a closed loop of clients, so served steps of many requests (host time per step
            # with the front end streaming) for `cadence profile --host-trace`
            run = measure_point(model, "sarathi", 1.0, args.loaded_requests, 2048, args.port, args.out, 8192,
                                workload=[*LOADED_PROBE_WORKLOAD, "--clients", str(args.clients)],
                                name=f"probe_loaded_{model}", trace=args.out / f"probe_loaded_{model}.steps.csv")
            print(f"probe (loaded) {model}: {run}", flush=True)
        return
    args.sim_out.mkdir(parents=True, exist_ok=True)
    rows = [compare_point(d, args.profiles, args.gpu, args.sim_out, args.sim_arg, args.profile_suffix)
            for d in sorted(args.runs.iterdir()) if (d / "point.json").exists() and (d / "summary.json").exists()]
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']} {r['policy']} {r['rate']:g}/s: skipped ({r['skipped']})")
            continue
        cells = ", ".join(f"{k} {v['measured']:.4g}/{v['simulated']:.4g} ({100 * v['rel_error']:+.1f}%)"
                          for k, v in r["metrics"].items())
        print(f"{r['model']} {r['policy']} {r['rate']:g}/s: {cells}")
    from cadence.bench.results import environment

    args.result.write_text(json.dumps({"benchmark": "sim_fidelity", "label": args.label, "environment": environment(),
                                       "measured_on": args.measured_on,
                                       "points": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
