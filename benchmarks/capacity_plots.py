"""Plots and table for the capacity study (benchmarks/capacity_study.py).

    python benchmarks/capacity_plots.py tbt --run sarathi-512=DIR/sarathi-512/W3/rate_1 --run vllm=DIR/vllm/W3/rate_1 \\
        --out benchmarks/results/capacity_w3_tbt_over_time.png
    python benchmarks/capacity_plots.py table benchmarks/results/capacity_*.json
    python benchmarks/capacity_plots.py summary --runs benchmarks/results/capacity_w3_runs \
        --out benchmarks/results/capacity_w3.json

`tbt`: every gap between consecutive output tokens of every request, at the time the later token
came, one panel per policy, for the same seeded request stream at the same arrival rate. `table`:
capacity per policy, workload and SLO with the bracket each search reached, as markdown. `summary`:
every measured rate point of every policy (`<runs>/<policy>/rate_<r>/summary.json`, from one or more
study runs on the same trace), each SLO's capacity and bracket recomputed from all of them, the
strict-SLO ratio of each policy to `vllm`, and what the engines' step traces
(`<runs>/steps_<policy>.csv.gz`) say about decode-only and prefill-carrying steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

SLOS = {"strict": 0.050, "relaxed": 0.250}
MAX_MEDIAN_SCHEDULING_DELAY = 2.0


def load_gaps(run: Path) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    with open(run / "requests.csv") as f:
        arrivals = {r["request_id"]: float(r["arrival_time"]) for r in csv.DictReader(f)}
    t0 = min(arrivals.values())
    xs, ys = [], []
    with open(run / "token_times.jsonl") as f:
        lines = f.readlines()
    for line in lines:
        d = json.loads(line)
        tt = d["token_times"]
        for a, b in zip(tt, tt[1:], strict=False):
            xs.append(b - t0)
            ys.append((b - a) * 1e3)
    return xs, ys, sorted((a - t0, 0.0) for a in arrivals.values())


def plot_tbt(runs: list[tuple[str, Path]], out: Path, slo_ms: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 3.2 * len(runs)), sharex=True, sharey=True)
    axes = list(axes) if len(runs) > 1 else [axes]
    for ax, (label, run) in zip(axes, runs, strict=True):
        xs, ys, arr = load_gaps(run)
        ys_sorted = sorted(ys)
        p99 = ys_sorted[int(0.99 * (len(ys_sorted) - 1))] if ys_sorted else float("nan")
        ax.scatter(xs, ys, s=2, alpha=0.5, label=f"token gaps (P99 {p99:.0f} ms)")
        ax.scatter([a for a, _ in arr], [1.0] * len(arr), marker="|", color="k", s=60, label="arrivals")
        ax.axhline(slo_ms, color="r", lw=1, ls="--", label=f"strict SLO {slo_ms:.0f} ms")
        ax.set_yscale("log")
        ax.set_ylabel("TBT (ms)")
        ax.set_title(label, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time since the first arrival (s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def table(files: list[Path]) -> str:
    rows = ["| policy | budget | workload | SLO | capacity (req/s) | bracket [pass, fail) | bound | points |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in files:
        doc = json.loads(f.read_text())
        for key, per_w in doc["searches"].items():
            budget = doc.get("policies", {}).get(key, {}).get("max_num_batched_tokens", "")
            for w, per_slo in per_w.items():
                for slo in ("strict", "relaxed"):
                    r = per_slo.get(slo)
                    if not r:
                        continue
                    cap, hi = r.get("capacity"), r.get("upper")
                    fmt = (lambda v: "-" if v is None else f"{v:.3g}")  # noqa: E731
                    rows.append(f"| {key} | {budget} | {w} | {slo} | {fmt(cap)} | [{fmt(cap)}, {fmt(hi)}) | "
                                f"{r.get('bound')} | {len(r.get('points', []))} |")
    return "\n".join(rows)


def bracket(points: list[dict], p99_tbt: float) -> dict:
    """The highest passing rate below the lowest failing one, from every point measured."""
    ok = {p["rate"]: p["p99_tbt_s"] <= p99_tbt and p["median_scheduling_delay_s"] <= MAX_MEDIAN_SCHEDULING_DELAY
          for p in points}
    lowest_fail = min((r for r, good in ok.items() if not good), default=None)
    passing = [r for r, good in ok.items() if good and (lowest_fail is None or r < lowest_fail)]
    return {"capacity": max(passing, default=None), "first_failing": lowest_fail,
            "non_monotone": any(good and lowest_fail is not None and r > lowest_fail for r, good in ok.items())}


def step_stats(path: Path) -> dict:
    from cadence.sim.calibration import read_step_trace

    rows = read_step_trace(path)

    def dur(r: dict) -> float:
        return sum(float(r[k]) for k in ("schedule_s", "prepare_s", "execute_s", "update_s"))

    def describe(rs: list[dict]) -> dict:
        if not rs:
            return {"steps": 0}
        d = sorted(dur(r) for r in rs)
        return {"steps": len(rs), "p50_ms": 1e3 * d[len(d) // 2], "p90_ms": 1e3 * d[int(0.9 * len(d))],
                "max_ms": 1e3 * d[-1], "median_seqs": statistics.median(int(r["num_seqs"]) for r in rs),
                "median_prefill_tokens": statistics.median(int(r["num_prefill_tokens"]) for r in rs),
                "median_prepare_ms": 1e3 * statistics.median(float(r["prepare_s"]) for r in rs)}

    decode = [r for r in rows if r["num_prefill_tokens"] == 0]
    prefill = [r for r in rows if r["num_prefill_tokens"] != 0]
    big = [r for r in prefill if int(r["num_prefill_tokens"]) >= 4000]
    out = {"decode_only": describe(decode), "with_prefill": describe(prefill)}
    if big:
        out["ms_per_1k_prefill_tokens_in_4k_plus_steps"] = statistics.median(
            1e6 * dur(r) / int(r["num_prefill_tokens"]) for r in big)
        out["prepare_share_of_4k_plus_steps"] = sum(float(r["prepare_s"]) for r in big) / sum(map(dur, big))
    return out


def summary(runs: Path) -> dict:
    policies: dict[str, dict] = {}
    for pdir in sorted(d for d in runs.iterdir() if d.is_dir()):
        points = []
        for rdir in sorted(pdir.glob("rate_*")):
            s = json.loads((rdir / "summary.json").read_text())
            sm, wl = s["summary"], s.get("workload", {})
            points.append({"rate": float(rdir.name.split("_", 1)[1]), "p99_tbt_s": sm["tbt"]["p99"],
                           "p50_tbt_s": sm["tbt"]["p50"], "p50_ttft_s": sm["ttft"]["p50"],
                           "median_scheduling_delay_s": sm["scheduling_delay"]["p50"],
                           "output_tok_s": sm["throughput"]["output_tokens_per_s"], "requests": wl.get("n")})
        points.sort(key=lambda p: p["rate"])
        entry = {"points": points, **{name: bracket(points, tbt) for name, tbt in SLOS.items()}}
        steps = runs / f"steps_{pdir.name}.csv.gz"
        if steps.exists():
            entry["steps"] = step_stats(steps)
        policies[pdir.name] = entry
    ratios = {}
    base = policies.get("vllm", {}).get("strict", {})
    for name, e in policies.items():
        cap, hi = e["strict"]["capacity"], e["strict"]["first_failing"]
        if base.get("capacity") and cap is not None:
            ratios[name] = {"point": cap / base["capacity"],
                            "low": cap / base["first_failing"] if base.get("first_failing") else None,
                            "high": hi / base["capacity"] if hi is not None else None}
    return {"benchmark": "capacity_summary", "slo_p99_tbt_s": SLOS,
            "slo_median_scheduling_delay_s": MAX_MEDIAN_SCHEDULING_DELAY, "policies": policies,
            "strict_capacity_vs_vllm": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tbt")
    t.add_argument("--run", action="append", required=True, help="LABEL=result dir of one rate point")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--slo-ms", type=float, default=50.0)
    t.add_argument("--title", default="llama3-8b on one H100, W3, same request stream and rate")
    tb = sub.add_parser("table")
    tb.add_argument("files", nargs="+", type=Path)
    sm = sub.add_parser("summary")
    sm.add_argument("--runs", type=Path, required=True)
    sm.add_argument("--out", type=Path, required=True)
    sm.add_argument("--note", default="", help="what was run (written to the JSON)")
    args = ap.parse_args()
    if args.cmd == "tbt":
        plot_tbt([(r.split("=", 1)[0], Path(r.split("=", 1)[1])) for r in args.run], args.out, args.slo_ms, args.title)
    elif args.cmd == "summary":
        doc = {**summary(args.runs), "note": args.note}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        for name, e in doc["policies"].items():
            print(f"{name}: strict {e['strict']}, relaxed {e['relaxed']}")
        print("strict vs vllm:", doc["strict_capacity_vs_vllm"])
    else:
        print(table(args.files))


if __name__ == "__main__":
    main()
