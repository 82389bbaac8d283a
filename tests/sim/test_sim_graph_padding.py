"""The simulator pads steps as the engine's CUDA graphs do (core/graph_buckets.py), calibrates a
piecewise-graphed prefill step per token bucket from the served sweep's trace, and adds the
request's way in and out measured by a served probe."""

from __future__ import annotations

import csv

import pytest

from cadence.core.graph_buckets import (
    MAX_PIECEWISE_TOKENS,
    decode_batch_buckets,
    padded,
    piecewise_token_buckets,
)
from cadence.core.workload import RequestSpec
from cadence.sim.calibration import add_served_points, request_path_points
from cadence.sim.deployment import Deployment
from cadence.sim.errors import SimInputError
from cadence.sim.hardware import gpu_spec
from cadence.sim.predictor import StepTimePredictor
from cadence.sim.roofline import analytic_profile
from cadence.sim.run import simulate

GPU = gpu_spec("H100")
COLUMNS = ("start", "schedule_s", "prepare_s", "execute_s", "update_s", "num_seqs", "num_decodes",
           "num_prefill_tokens", "num_context_tokens", "graphed", "overlapped", "max_context_tokens", "padded_tokens")


def test_buckets_are_the_engines():
    assert padded(600, piecewise_token_buckets(2048)) == 640
    assert padded(2048, piecewise_token_buckets(2048)) == 2048
    assert padded(2049, piecewise_token_buckets(2048)) is None
    assert piecewise_token_buckets(1000)[-2:] == [896, 1000]  # the budget is the last bucket
    assert padded(25, decode_batch_buckets(256)) == 32 and padded(1, decode_batch_buckets(256)) == 1
    assert max(piecewise_token_buckets(10**6)) == 10**6 and MAX_PIECEWISE_TOKENS == 4096


def test_predictor_pays_for_padded_rows():
    prof = analytic_profile("llama3-8b", 1, GPU)
    plain = StepTimePredictor(prof, 1, GPU, 4096)
    pad = StepTimePredictor(prof, 1, GPU, 4096, graph_max_batch=256, piecewise_max_tokens=2048)
    ctx = 25 * 1000
    extra = plain.dense[32] + plain.head[32] - plain.dense[25] - plain.head[25]
    assert extra > 0
    assert pad.step_time(25, 25, 25, 25, ctx) == pytest.approx(plain.step_time(25, 25, 25, 25, ctx) + extra)
    base, slope = pad.decode_window(25, ctx)
    assert base == pytest.approx(pad.step_time(25, 25, 25, 25, ctx))
    assert slope == pytest.approx(plain.decode_window(25, ctx)[1])  # only the 25 real requests gain keys
    one = (600, 1, 1, 0, 0, [(600, 600)])
    assert pad.step_time(*one) == pytest.approx(plain.step_time(*one) + plain.dense[640] - plain.dense[600])
    eager = (3000, 1, 1, 0, 0, [(3000, 3000)])  # over the piecewise graphs' largest bucket
    assert pad.step_time(*eager) == pytest.approx(plain.step_time(*eager))


def _prefill_attention(pred: StepTimePredictor, q: int, kv: int) -> float:
    a, b, c, d = pred.prefill
    return pred.layers * (a + b * q + c * q * (kv - q / 2) + d * kv)


def bucket_cost(t: int) -> float:
    return 1e-3 + 9e-6 * t


def write_sweep_trace(path, pred: StepTimePredictor) -> None:
    """Lone prefills replayed at their bucket (execute = the bucket's dense cost + attention),
    then decode-only steps."""
    rows, t = [], 10.0
    buckets = piecewise_token_buckets(4096)
    for q in (20, 100, 300, 500, 600, 700, 1000, 1500, 2000, 3000, 4000):
        b = padded(q, buckets)
        ex = bucket_cost(b) + _prefill_attention(pred, q, q)
        rows.append((t, 1e-4, 1e-3, ex, 1e-4, 1, 0, q, q, 1, 0, q, b))
        t += ex + 2e-3
    for b in (1, 2, 4, 8, 16, 32):
        ex = 5e-3 + 1e-4 * b
        rows.append((t, 1e-4, 3e-4, ex, 1e-4, b, b, 0, b * 500, 1, 0, 500, b))
        t += ex + 1e-3
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)


def test_served_prefill_is_the_bucket_cost_beside_attention(tmp_path):
    prof = analytic_profile("llama3-8b", 1, GPU)
    ref = StepTimePredictor(prof, 1, GPU, 4096)
    trace = tmp_path / "sweep.csv"
    write_sweep_trace(trace, ref)
    counts = add_served_points(prof, [trace])
    assert counts["served_prefill"] == 11
    got = {p.tokens: p.time_s for p in prof.points if p.op == "served_prefill"}
    assert sorted(got) == [32, 128, 384, 512, 640, 768, 1024, 1536, 2048, 3072, 4096]
    for b, v in got.items():
        assert v == pytest.approx(bucket_cost(b), rel=1e-6)
    pred = StepTimePredictor(prof, 1, GPU, 4096, graph_max_batch=256, piecewise_max_tokens=4096)
    host = pred._host(1, 600)
    want = bucket_cost(640) + _prefill_attention(pred, 600, 1800)
    assert pred.step_time(600, 1, 1, 0, 0, [(600, 1800)]) == pytest.approx(host + want)
    # a bucket the sweep did not reach (896): between its neighbours' costs
    mid = pred.step_time(850, 1, 1, 0, 0, [(850, 850)]) - pred._host(1, 850) - _prefill_attention(pred, 850, 850)
    assert mid == pytest.approx(bucket_cost(896), rel=1e-6)


def write_probe(tmp_path, way_in: float, way_out: float, step: float) -> tuple:
    """An idle probe: each request waits `way_in` to be scheduled; its first step (start to the
    next step's start) takes `step`; its first token reaches the client `way_out` later."""
    req, trace = tmp_path / "requests.csv", tmp_path / "steps.csv"
    with open(req, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request_id", "arrival_time", "send_time", "first_scheduled_time", "first_token_time", "error"])
        for i in range(20):
            sent = 0.25 * i
            w.writerow([i, sent, sent, sent + way_in, sent + way_in + step + way_out, ""])
    rows, t = [], 5.0
    for _ in range(20):
        rows.append((t, 1e-4, 5e-4, step - 1.2e-3, 1e-4, 1, 0, 32, 32, 1, 0, 32, 32))
        t += step
        for _ in range(3):
            rows.append((t, 1e-4, 2e-4, 6e-3, 1e-4, 1, 1, 0, 33, 1, 0, 33, 1))
            t += 7e-3
        t += 0.2  # idle until the next request
    with open(trace, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return req, trace


def test_request_path_shifts_first_tokens_not_gaps(tmp_path):
    prof = analytic_profile("llama3-8b", 1, GPU)
    req, trace = write_probe(tmp_path, 1.5e-3, 0.9e-3, 0.012)
    got = request_path_points(prof, req, trace)
    assert got["served_request_in"] == pytest.approx(1.5e-3) and got["served_request_out"] == pytest.approx(0.9e-3)
    with_path = tmp_path / "with.csv"
    prof.save(with_path)
    without = tmp_path / "without.csv"
    analytic_profile("llama3-8b", 1, GPU).save(without)
    specs = [RequestSpec(i, 200, 20, arrival_time=float(i)) for i in range(4)]  # one at a time
    a = simulate(Deployment(profile=str(without)), specs).result.records
    b = simulate(Deployment(profile=str(with_path)), specs).result.records
    for x, y in zip(a, b, strict=True):
        assert y.arrival_time == x.arrival_time  # the client's send
        assert y.token_times[0] - x.token_times[0] == pytest.approx(2.4e-3)
        gaps = [t1 - t0 for t0, t1 in zip(y.token_times, y.token_times[1:], strict=False)]
        assert gaps == pytest.approx([t1 - t0 for t0, t1 in zip(x.token_times, x.token_times[1:], strict=False)])


def test_probe_input_errors_are_named(tmp_path):
    prof = analytic_profile("llama3-8b", 1, GPU)
    with pytest.raises(SimInputError, match="do not exist"):
        request_path_points(prof, tmp_path / "none.csv", tmp_path / "steps.csv")
    req, trace = write_probe(tmp_path, 1e-3, 1e-3, 0.01)
    with open(req) as f:
        head = f.readline() + f.readline()
    short = tmp_path / "short.csv"
    short.write_text(head)
    with pytest.raises(SimInputError, match="need at least 5"):
        request_path_points(prof, short, trace)
