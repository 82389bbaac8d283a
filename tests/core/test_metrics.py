"""Every metric on hand-computed fixtures (times chosen as binary fractions so the arithmetic is exact)."""

from __future__ import annotations

import math

import pytest

from cadence.core import metrics as m
from cadence.core.metrics import Deadlines, RequestRecord, RequestSLO, ServiceSLO


def rec(rid="0", arrival=10.0, times=(10.25, 11.0, 12.5, 13.0), prompt=8, out=None, **kw) -> RequestRecord:
    return RequestRecord(rid, arrival, prompt, len(times) if out is None else out, tuple(times), **kw)


def test_per_request_latencies():
    r = rec()
    assert m.ttft(r) == 0.25
    assert m.tbts(r) == [0.75, 1.5, 0.5]
    assert m.tpot(r) == pytest.approx(2.75 / 3)
    assert m.e2e(r) == 3.0
    assert m.normalized_latency(r) == 0.75
    assert m.scheduling_delay(r) is None
    assert m.scheduling_delay(rec(first_scheduled_time=10.5)) == 0.5
    assert m.dispatch_lag(rec(send_time=10.001)) == pytest.approx(0.001)


def test_single_and_empty_token_records():
    one = rec(times=(10.5,))
    assert m.ttft(one) == 0.5 and m.tbts(one) == [] and m.tpot(one) is None and m.e2e(one) == 0.5
    none = rec(times=())
    assert m.ttft(none) is None and m.e2e(none) is None and m.normalized_latency(none) is None


def test_deadlines_slack_carries_over_and_resets_on_miss():
    # D_p = 1, D_d = 0.5; gaps 0.25 (slack 0.75), 0.75 (<= 0.5 + 0.75, slack 0.5),
    # 1.5 (> 0.5 + 0.5: misses = floor((1.5 - 0.5) / 0.5) = 2, slack 0), 0.5 (<= 0.5 + 0, slack 0).
    assert m.deadline_misses([0.25, 0.75, 1.5, 0.5], 1.0, 0.5) == (2, 5)
    assert m.fluidity_index(rec(), 1.0, 0.5) == pytest.approx(0.6)


def test_deadlines_first_token_miss_counts_extra_decode_deadlines():
    # t_0 = 2.25 > D_p = 1: misses = 1 + floor((2.25 - 0 - 1) / 0.5) = 3; then 0.125 meets (slack 0.375),
    # then 0.875 <= 0.5 + 0.375 meets exactly.
    assert m.deadline_misses([2.25, 0.125, 0.875], 1.0, 0.5) == (3, 5)
    # A later token missing by just over one deadline: floor((0.75 - 0) / 0.5) = 1.
    assert m.deadline_misses([1.0, 0.75], 1.0, 0.5) == (1, 2)
    # A chunk of several tokens: zero gaps earn a whole deadline of slack each.
    assert m.deadline_misses([0.5, 0.0, 0.0, 1.4], 1.0, 0.5) == (0, 4)
    with pytest.raises(ValueError):
        m.deadline_misses([1.0], 1.0, 0.0)


def test_fluent_token_rate_finds_the_decode_rate():
    # Every request: first token exactly at D_p (no slack), then a token every 0.1 s.
    rs = [rec(str(i), 0.0, tuple(0.3 + 0.1 * k for k in range(20))) for i in range(10)]
    rate = m.fluent_token_rate(rs, lambda r: 0.3)
    assert rate == pytest.approx(10.0, rel=2e-3)
    assert m.fluent_token_rate([], lambda r: 0.3) is None
    slow = [rec("s", 0.0, (100.0, 200.0))]
    assert m.fluent_token_rate(slow, lambda r: 0.3) is None


def test_percentiles_match_linear_interpolation():
    xs = [1.0, 2.0, 3.0, 4.0]
    assert m.percentile(xs, 50) == 2.5
    assert m.percentile(xs, 90) == pytest.approx(3.7)
    assert m.percentile(xs, 100) == 4.0 and m.percentile([7.0], 99) == 7.0
    d = m.distribution([4.0, 1.0, 3.0, 2.0])
    assert d["count"] == 4 and d["mean"] == 2.5 and d["min"] == 1.0 and d["max"] == 4.0
    assert d["p50"] == 2.5 and d["p99"] == pytest.approx(3.97)
    assert m.distribution([]) == {"count": 0}


def test_summarize_throughput_goodput_errors():
    a = rec("0", 0.0, (0.5, 1.0, 1.5, 2.0), prompt=100)  # ttft 0.5, tpot 0.5
    b = rec("1", 1.0, (1.25, 1.5, 1.75, 2.0, 4.0), prompt=50)  # ttft 0.25, max tbt 2.0
    c = RequestRecord("2", 2.0, 10, 0, error="http_500", finish_time=2.5)
    d = RequestRecord("3", 3.0, 10, 0, error="connect", finish_time=3.5)
    opts = m.SummaryOptions(Deadlines(0.5, 1.0), RequestSLO(ttft=0.4))
    s = m.summarize([a, b, c, d], opts)
    assert s["requests"] == {
        "total": 4, "completed": 2, "failed": 2, "error_rate": 0.5,
        "errors_by_kind": {"connect": 1, "http_500": 1}, "short_outputs": 0,
    }  # fmt: skip
    assert s["duration_s"] == 4.0  # first arrival 0 to b's last token at 4.0
    assert s["throughput"]["requests_per_s"] == 0.5
    assert s["throughput"]["input_tokens_per_s"] == 150 / 4
    assert s["throughput"]["output_tokens_per_s"] == 9 / 4
    assert s["goodput"]["requests"] == 1  # only b has TTFT <= 0.4
    assert s["ttft"]["p50"] == pytest.approx(0.375)
    assert s["tbt"]["count"] == 7 and s["tbt"]["max"] == 2.0
    # b: gaps .25 .25 .25 .25 2.0 with D_p 1, D_d .5: slack .75,1.0,1.25,1.5 then 2.0 <= 2.0 -> no miss.
    assert s["deadlines"]["missed"] == 0 and s["deadlines"]["total"] == 9
    assert s["scheduling_delay"] == {"count": 0}


def test_short_outputs_and_error_rate_zero_division():
    r = rec(out=4, target_output_tokens=10)
    assert m.summarize([r])["requests"]["short_outputs"] == 1
    empty = m.summarize([])
    assert empty["requests"]["total"] == 0 and empty["throughput"]["requests_per_s"] == 0.0


def test_request_slo_and_service_slo():
    r = rec("0", 0.0, (0.5, 1.0, 1.5))
    assert RequestSLO(ttft=0.5, tpot=0.5, e2e=1.5, max_tbt=0.5).met_by(r)
    assert not RequestSLO(max_tbt=0.4).met_by(r)
    assert not RequestSLO(ttft=1.0).met_by(RequestRecord("x", 0, 1, 0, error="timeout"))
    s = m.summarize([r])
    assert ServiceSLO(p99_tbt=0.5, median_scheduling_delay=0.5).check(s) == []
    reasons = ServiceSLO(p99_tbt=0.4, p90_ttft=0.1, deadline_miss_rate=0.0).check(s)
    assert (
        len(reasons) == 3
        and reasons[0].startswith("P99 TBT")
        and reasons[2].startswith("deadline miss rate 1 ")
    )
    # Without scheduler timestamps, the median scheduling delay check uses TTFT (its upper bound).
    assert ServiceSLO(median_scheduling_delay=0.25).check(s) == ["median scheduling delay 0.5 > 0.25"]
    sched = rec("0", 0.0, (0.5, 1.0), first_scheduled_time=0.125)
    assert ServiceSLO(median_scheduling_delay=0.25).check(m.summarize([sched])) == []


def test_deadlines_prefill_prediction():
    d = Deadlines(decode=0.05, prefill_slack=0.3, prefill_per_token=0.001)
    assert d.prefill_for(rec(prompt=200)) == pytest.approx(0.5)
    assert math.isclose(Deadlines().prefill_for(rec(prompt=10_000)), 0.3)
