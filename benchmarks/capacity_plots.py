"""Plots and table for the capacity study (benchmarks/capacity_study.py).

    python benchmarks/capacity_plots.py tbt --run sarathi-512=DIR/sarathi-512/W3/rate_1 --run vllm=DIR/vllm/W3/rate_1 \\
        --out benchmarks/results/capacity_w3_tbt_over_time.png
    python benchmarks/capacity_plots.py table benchmarks/results/capacity_*.json

`tbt`: every gap between consecutive output tokens of every request, at the time the later token
came, one panel per policy, for the same seeded request stream at the same arrival rate. `table`:
capacity per policy, workload and SLO with the bracket each search reached, as markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


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
    args = ap.parse_args()
    if args.cmd == "tbt":
        plot_tbt([(r.split("=", 1)[0], Path(r.split("=", 1)[1])) for r in args.run], args.out, args.slo_ms, args.title)
    else:
        print(table(args.files))


if __name__ == "__main__":
    main()
