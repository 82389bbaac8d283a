"""Capacity search: the highest arrival rate whose run meets a ServiceSLO, by bracketing then bisection.

`search_capacity` knows nothing of HTTP: it calls `evaluate(rate) -> summary` (a bench run, or later a
simulation) and caches every point, so a rate is never run twice and a resumed search reuses the
points it already has. It stops when the bracket [passing, failing] is narrower than `precision`
times the passing rate. Runs are noisy: each point uses the same seeded requests with arrival gaps
scaled by 1/rate (common random numbers), which keeps neighbouring points comparable, and the
bisection assumes that meeting the SLO is monotone in the rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cadence.core.metrics import ServiceSLO


@dataclass(frozen=True)
class CapacityConfig:
    slo: ServiceSLO
    start_rate: float = 1.0  # first probe; the bracket grows or shrinks by `factor` from here
    max_rate: float | None = None  # stop growing here and report "at least"
    min_rate: float = 1e-3
    factor: float = 2.0
    precision: float = 0.05  # relative width of the final bracket
    max_points: int = 24


def point_summary(rate: float, summary: dict, slo: ServiceSLO) -> dict:
    reasons = slo.check(summary)
    sched = summary["scheduling_delay"] if summary["scheduling_delay"]["count"] else summary["ttft"]
    return {
        "rate": rate,
        "ok": not reasons,
        "reasons": reasons,
        "p99_tbt": summary["tbt"].get("p99"),
        "p90_ttft": summary["ttft"].get("p90"),
        "median_sched": sched.get("p50"),
        "sched_source": "scheduler" if summary["scheduling_delay"]["count"] else "ttft_upper_bound",
        "deadline_miss_rate": summary["deadlines"].get("miss_rate"),
        "error_rate": summary["requests"]["error_rate"],
        "throughput_rps": summary["throughput"]["requests_per_s"],
        "output_tokens_per_s": summary["throughput"]["output_tokens_per_s"],
    }


def _key(rate: float) -> float:
    return float(f"{rate:.6g}")


def search_capacity(
    evaluate: Callable[[float], dict],
    cfg: CapacityConfig,
    cache: dict[float, dict] | None = None,
    on_point: Callable[[dict], None] | None = None,
) -> dict:
    """Returns {"capacity", "upper", "bound", "converged", "precision", "points"}.

    bound: "bracketed" (capacity in [capacity, upper)), "at_least" (max_rate met the SLO),
    "below_min" (even min_rate failed; capacity is None), or "budget" (max_points ran out).
    `cache` maps rate -> point summary (as point_summary returns) and is filled in place.
    """
    cache = {} if cache is None else cache
    fresh = 0

    def probe(rate: float) -> bool:
        nonlocal fresh
        rate = _key(rate)
        if rate not in cache:
            fresh += 1
            cache[rate] = point_summary(rate, evaluate(rate), cfg.slo)
            if on_point:
                on_point(cache[rate])
        return cache[rate]["ok"]

    # Start from what the cache already proves, then bracket.
    passing = [r for r, p in cache.items() if p["ok"]]
    failing = [r for r, p in cache.items() if not p["ok"]]
    lo = max(passing, default=None)
    hi = min((r for r in failing if lo is None or r > lo), default=None)
    bound = "bracketed"
    if lo is None and hi is None:
        if probe(cfg.start_rate):
            lo = _key(cfg.start_rate)
        else:
            hi = _key(cfg.start_rate)
    while hi is None:  # grow until a failure
        nxt = lo * cfg.factor
        if cfg.max_rate is not None and nxt >= cfg.max_rate:
            nxt = cfg.max_rate
        if probe(nxt):
            lo = _key(nxt)
            if cfg.max_rate is not None and nxt >= cfg.max_rate:
                bound = "at_least"
                break
        else:
            hi = _key(nxt)
        if fresh >= cfg.max_points:
            bound = "budget"
            break
    while lo is None and hi is not None:  # shrink until a pass
        nxt = hi / cfg.factor
        if nxt < cfg.min_rate:
            bound = "below_min"
            break
        if probe(nxt):
            lo = _key(nxt)
        else:
            hi = _key(nxt)
        if fresh >= cfg.max_points:
            bound = "budget"
            break
    if bound == "bracketed":
        while hi - lo > cfg.precision * lo:
            if fresh >= cfg.max_points:
                bound = "budget"
                break
            mid = (lo + hi) / 2
            if probe(mid):
                lo = _key(mid)
            else:
                hi = _key(mid)
    return {
        "capacity": lo,
        "upper": hi,
        "bound": bound,
        "converged": bound in ("bracketed", "at_least"),
        "precision": cfg.precision,
        "slo": {k: v for k, v in vars(cfg.slo).items() if v is not None},
        "points": sorted(cache.values(), key=lambda p: p["rate"]),
        "new_points": fresh,
    }
