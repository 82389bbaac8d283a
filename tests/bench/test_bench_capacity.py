"""Capacity search: bracketing and bisection on a known threshold, and on a real server whose latency grows with load."""

from __future__ import annotations

import pytest

from cadence.bench.capacity import CapacityConfig, search_capacity
from cadence.bench.client import EndpointConfig, Prompt
from cadence.bench.runner import run_workload
from cadence.bench.scripted_server import Script, serve_in_subprocess
from cadence.core import metrics as m
from cadence.core import workload as wl
from cadence.core.metrics import ServiceSLO


def fake_summary(p99_tbt: float) -> dict:
    rec = m.RequestRecord("0", 0.0, 1, 2, (0.01, 0.01 + p99_tbt))
    return m.summarize([rec], m.SummaryOptions(fluent_rate=False))


def test_bisection_on_a_known_threshold_with_cache():
    calls: list[float] = []

    def evaluate(rate: float) -> dict:
        calls.append(rate)
        return fake_summary(0.01 * rate)  # P99 TBT grows linearly; the SLO 0.5 s is met up to rate 50

    cfg = CapacityConfig(ServiceSLO(p99_tbt=0.5), start_rate=1.0, precision=0.02)
    cache: dict[float, dict] = {}
    res = search_capacity(evaluate, cfg, cache)
    assert res["bound"] == "bracketed" and res["converged"]
    assert res["capacity"] <= 50.0 < res["upper"]
    assert (res["upper"] - res["capacity"]) <= 0.02 * res["capacity"]
    assert len(calls) == len(set(calls)) == len(res["points"])
    # Resumed with the cache: nothing is run again.
    again = search_capacity(evaluate, cfg, cache)
    assert again["new_points"] == 0 and again["capacity"] == res["capacity"]


def test_bounds_reported():
    at_least = search_capacity(
        lambda r: fake_summary(0.001), CapacityConfig(ServiceSLO(p99_tbt=0.5), 1.0, max_rate=8.0)
    )
    assert at_least["bound"] == "at_least" and at_least["capacity"] == 8.0
    below = search_capacity(
        lambda r: fake_summary(9.0), CapacityConfig(ServiceSLO(p99_tbt=0.5), 1.0, min_rate=0.1)
    )
    assert below["bound"] == "below_min" and below["capacity"] is None
    budget = search_capacity(
        lambda r: fake_summary(0.01 * r),
        CapacityConfig(ServiceSLO(p99_tbt=0.5), 1.0, precision=1e-6, max_points=6),
    )
    assert budget["bound"] == "budget" and not budget["converged"]


@pytest.mark.timeout(150)
def test_capacity_on_a_server_whose_latency_grows_with_load():
    # Toy continuous batcher: a step takes 10 ms + 1 ms per running request, one token per request per step.
    # Little's law puts P99 TBT over 30 ms somewhere near 40-90 requests/s for 10-token outputs.
    script = Script(engine=True, step=0.01, step_per_request=0.001)
    specs0 = wl.synthetic(wl.Fixed(8), wl.Fixed(10), 60, wl.Arrivals("poisson", 1.0), seed=0)
    prompts = [Prompt(8, text="a b c d e f g h")] * len(specs0)
    slo = ServiceSLO(p99_tbt=0.03, median_scheduling_delay=2.0)
    with serve_in_subprocess(script) as url:
        cfg = EndpointConfig(url, script.model)

        def evaluate(rate: float) -> dict:
            specs = wl.assign_arrivals(specs0, wl.Arrivals("poisson", rate), seed=0)
            return m.summarize(run_workload(cfg, specs, prompts).records, m.SummaryOptions(fluent_rate=False))

        res = search_capacity(evaluate, CapacityConfig(slo, start_rate=16.0, precision=0.15, max_points=10))
    assert res["converged"], res
    assert 15 < res["capacity"] < 200
    ok = [p for p in res["points"] if p["ok"]]
    bad = [p for p in res["points"] if not p["ok"]]
    assert ok and bad and max(p["rate"] for p in ok) < min(p["rate"] for p in bad)
    assert all(p["sched_source"] == "ttft_upper_bound" for p in res["points"])
