"""PNG plots of a run and of a capacity search (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cadence.core import metrics as m
from cadence.core.metrics import RequestRecord


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cdf(ax, values: Sequence[float], title: str, unit_scale: float, unit: str) -> None:
    xs = sorted(v * unit_scale for v in values)
    if xs:
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post")
        for p, style in ((50, ":"), (99, "--")):
            ax.axvline(m.percentile(xs, p), color="grey", linestyle=style, linewidth=0.8, label=f"p{p}")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(unit)
    ax.set_ylabel("fraction")
    ax.grid(alpha=0.3)


def draw_run(plot_dir: str | Path, records: Sequence[RequestRecord]) -> list[Path]:
    """latency_cdf.png, tokens_over_time.png, ttft_vs_prompt.png; returns the paths written."""
    plt = _plt()
    out = Path(plot_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.ok and r.token_times]
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _cdf(axes[0], [v for v in map(m.ttft, ok) if v is not None], "TTFT", 1e3, "ms")
    _cdf(axes[1], [g for r in ok for g in m.tbts(r)], "TBT (every gap)", 1e3, "ms")
    _cdf(axes[2], [v for v in map(m.e2e, ok) if v is not None], "E2E latency", 1.0, "s")
    fig.tight_layout()
    written.append(_save(fig, out / "latency_cdf.png", plt))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    times = sorted(t for r in ok for t in r.token_times)
    if times:
        ax.step(times, range(1, len(times) + 1), where="post", label="output tokens")
    arrivals = sorted(r.arrival_time for r in records)
    ax2 = ax.twinx()
    ax2.step(arrivals, range(1, len(arrivals) + 1), where="post", color="tab:orange", label="arrivals")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("cumulative output tokens")
    ax2.set_ylabel("cumulative arrivals", color="tab:orange")
    ax.set_title("Tokens over time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out / "tokens_over_time.png", plt))

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.scatter([r.prompt_tokens for r in ok], [m.ttft(r) * 1e3 for r in ok], s=6, alpha=0.6)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT against prompt length")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out / "ttft_vs_prompt.png", plt))
    return written


def draw_capacity(path: str | Path, points: Sequence[dict], slo: dict) -> Path:
    """Each probed rate's P99 TBT, P90 TTFT and median scheduling delay (or TTFT bound), with the SLO lines."""
    plt = _plt()
    pts = sorted(points, key=lambda p: p["rate"])
    series = (
        ("p99_tbt", "P99 TBT", "p99_tbt"),
        ("p90_ttft", "P90 TTFT", "p90_ttft"),
        ("median_sched", "median sched. delay", "median_scheduling_delay"),
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, slo_key in series:
        xs = [p["rate"] for p in pts if p.get(key) is not None]
        ys = [p[key] for p in pts if p.get(key) is not None]
        if not xs:
            continue
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        if slo.get(slo_key) is not None:
            ax.axhline(slo[slo_key], color=line.get_color(), linestyle="--", linewidth=0.8)
    for p in pts:
        ax.axvline(p["rate"], color="green" if p["ok"] else "red", alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_ylabel("seconds")
    ax.set_title("Capacity search (green: SLO met, red: violated; dashed: SLO)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path), plt)


def _save(fig, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
