"""Workloads are exactly reproducible and follow WORKLOADS.md."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from cadence.core import workload as wl


def test_w1_matches_the_reference_generator():
    specs = wl.w1()
    assert len(specs) == 256
    assert sum(s.output_tokens for s in specs) == 132_121
    rng = random.Random(0)
    for s in specs[:3]:
        i, o = rng.randint(100, 1024), rng.randint(100, 1024)
        ids = [rng.randint(10, 30000) for _ in range(i)]
        assert (s.prompt_tokens, s.output_tokens, list(s.prompt_token_ids)) == (i, o, ids)
    assert all(s.arrival_time == 0.0 for s in specs)
    assert wl.named("w1") == specs


def test_w2_w3_reproducible_and_clipped():
    a, b = wl.named("W2", 300, rate=4.0, seed=3), wl.named("W2", 300, rate=4.0, seed=3)
    assert a == b
    assert a != wl.named("W2", 300, rate=4.0, seed=4)
    assert all(16 <= s.prompt_tokens <= 4096 and 16 <= s.output_tokens <= 1024 for s in a)
    assert 450 < statistics.median(s.prompt_tokens for s in a) < 750
    w3 = wl.named("W3", 300, rate=1.0)
    assert all(1024 <= s.prompt_tokens <= 16000 and 16 <= s.output_tokens <= 1024 for s in w3)
    assert 5000 < statistics.median(s.prompt_tokens for s in w3) < 7000


def test_same_requests_at_every_rate_with_gaps_scaled():
    slow, fast = wl.named("W2", 50, rate=1.0), wl.named("W2", 50, rate=4.0)
    assert [(s.prompt_tokens, s.output_tokens) for s in slow] == [
        (s.prompt_tokens, s.output_tokens) for s in fast
    ]
    for s, f in zip(slow, fast, strict=True):
        assert f.arrival_time == pytest.approx(s.arrival_time / 4)


def test_poisson_gamma_constant_arrivals():
    n = 20_000
    t = wl.Arrivals("poisson", 50.0).times(n, seed=1)
    gaps = [b - a for a, b in zip([0.0, *t], t, strict=False)]
    assert statistics.mean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.05)
    assert max(gaps) > 6 / 50  # no truncation of the exponential tail
    g = wl.Arrivals("gamma", 50.0, cv=2.0).times(n, seed=1)
    ggaps = [b - a for a, b in zip([0.0, *g], g, strict=False)]
    assert statistics.mean(ggaps) == pytest.approx(1 / 50, rel=0.06)
    assert statistics.stdev(ggaps) / statistics.mean(ggaps) == pytest.approx(2.0, rel=0.1)
    assert wl.Arrivals("constant", 4.0).times(3) == [0.25, 0.5, 0.75]
    assert wl.Arrivals("poisson", math.inf).times(3) == [0.0, 0.0, 0.0]
    assert wl.Arrivals("closed", clients=8).times(2) == [0.0, 0.0]
    with pytest.raises(ValueError):
        wl.Arrivals("bursty")


def test_length_distributions():
    rng = random.Random(0)
    assert wl.parse_length_dist("512") == wl.Fixed(512)
    assert wl.parse_length_dist("uniform:10:20") == wl.Uniform(10, 20)
    assert wl.parse_length_dist("lognormal:600:0.8:16:4096") == wl.LogNormal(600, 0.8, 16, 4096)
    z = wl.parse_length_dist("zipf:1.2:1:100")
    xs = [z.sample(rng) for _ in range(5000)]
    assert min(xs) >= 1 and max(xs) <= 100
    assert xs.count(1) > xs.count(2) > xs.count(10)
    ln = wl.LogNormal(100, 3.0, 50, 150)
    assert all(50 <= ln.sample(rng) <= 150 for _ in range(500))
    for bad in ("uniform:1", "pareto:2", "lognormal:x:1"):
        with pytest.raises(ValueError):
            wl.parse_length_dist(bad)
    specs = wl.synthetic(wl.Uniform(1, 9), wl.Fixed(5), 20, wl.Arrivals("constant", 10.0), seed=7)
    assert specs == wl.synthetic(wl.Uniform(1, 9), wl.Fixed(5), 20, wl.Arrivals("constant", 10.0), seed=7)
    assert [s.request_id for s in specs] == list(range(20))


def test_csv_trace_and_sharegpt(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens,arrived_at\n100,10,5.0\n200,20,5.5\n300,30,7\n")
    specs = wl.load_csv_trace(trace)
    assert [(s.prompt_tokens, s.output_tokens, s.arrival_time) for s in specs] == [
        (100, 10, 0.0),
        (200, 20, 0.5),
        (300, 30, 2.0),
    ]
    assert wl.assign_arrivals(specs, wl.Arrivals("trace")) == specs
    no_time = tmp_path / "n.csv"
    no_time.write_text("num_prefill_tokens,num_decode_tokens\n7,8\n")
    assert wl.load_csv_trace(no_time)[0].arrival_time == 0.0
    bad = tmp_path / "b.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError):
        wl.load_csv_trace(bad)
    convs = [
        {"conversations": [{"from": "human", "value": "word " * 40}, {"from": "gpt", "value": "x" * 400}]},
        {"conversations": [{"from": "human", "value": "only one turn"}]},
        {"conversations": [{"from": "human", "value": "hi " * 30}, {"from": "gpt", "value": "y" * 80}]},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs))
    sg = wl.load_sharegpt(
        path, shuffle=False, count_tokens=lambda s: len(s.split()) if " " in s else len(s) // 4
    )
    assert [(s.prompt_tokens, s.output_tokens) for s in sg] == [(40, 100), (30, 20)]
    assert sg[0].prompt_text.startswith("word")
    d = wl.describe(sg)
    assert d["num_requests"] == 2 and d["total_output_tokens"] == 120
