"""Served-step calibration: fits from an engine step trace replace the op sum for decode steps and
the host time, and the simulator's decode windows stay equal to step-by-step times."""

from __future__ import annotations

import csv
import gzip
import random

import pytest

from cadence.sim.calibration import add_served_points
from cadence.sim.errors import SimInputError
from cadence.sim.hardware import gpu_spec
from cadence.sim.predictor import StepTimePredictor
from cadence.sim.profile_cli import add_arguments, run
from cadence.sim.roofline import analytic_profile

COLUMNS = ("start", "schedule_s", "prepare_s", "execute_s", "update_s", "num_seqs", "num_decodes",
           "num_prefill_tokens", "num_context_tokens", "graphed")
DEC = (4e-3, 50e-6, 2e-9, 1.5e-6)  # served decode: fixed, per request, per key, per key of the mean context
HOST = (3e-4, 20e-6, 4e-6)  # fixed, per request, per prefill token


def served_decode(b: int, ctx_sum: int) -> float:
    return DEC[0] + DEC[1] * b + DEC[2] * ctx_sum + DEC[3] * ctx_sum / b


def write_trace(path, steps: int = 3000, seed: int = 0, gzipped: bool = False, eager_floor: float = 0.0) -> None:
    rng = random.Random(seed)
    t = 100.0
    rows = []
    for _ in range(steps):
        b = rng.choice((1, 2, 3, 5, 8, 13, 21, 40, 64))
        ctx = b * rng.randint(200, 9000)
        prefill = 0 if rng.random() < 0.8 else rng.randint(16, 2048)
        host = HOST[0] + HOST[1] * (b + (prefill > 0)) + HOST[2] * prefill
        noise = 1 + rng.uniform(-0.02, 0.02)
        exec_s = served_decode(b, ctx) * noise if not prefill else max(eager_floor, 0.002 + prefill * 30e-6)
        sched, upd = host * 0.2, host * 0.1
        prep, gap = host * 0.5, host * 0.2
        seqs = b + (prefill > 0)
        rows.append((t, sched, prep, exec_s, upd, seqs, b, prefill, ctx + prefill, int(not prefill)))
        t += sched + prep + exec_s + upd + gap
    opener = gzip.open if gzipped else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)


def calibrated(tmp_path, name: str = "steps.csv", **kw):
    prof = analytic_profile("llama3-8b", 1, gpu_spec("H100"))
    trace = tmp_path / name
    write_trace(trace, **kw)
    counts = add_served_points(prof, [trace])
    return prof, counts


def test_calibrated_decode_and_host_times_follow_the_trace(tmp_path):
    prof, counts = calibrated(tmp_path)
    assert counts["served_decode"] > 2000 and counts["served_host"] > 2900
    pred = StepTimePredictor(prof, 1, gpu_spec("H100"), 8192)
    for b, per_req in ((1, 8000), (4, 6000), (16, 1200), (64, 300)):
        ctx = b * per_req
        want = served_decode(b, ctx) + HOST[0] + HOST[1] * b
        got = pred.step_time(b, b, b, b, ctx)
        assert got == pytest.approx(want, rel=0.03), (b, per_req)
    # the uncalibrated profile misses the per-request context walk: far off at few long requests
    plain = StepTimePredictor(analytic_profile("llama3-8b", 1, gpu_spec("H100")), 1, gpu_spec("H100"), 8192)
    assert plain.step_time(1, 1, 1, 1, 8000) < 0.8 * pred.step_time(1, 1, 1, 1, 8000)
    # a mixed step pays the host's per-prefill-token time on top of its ops
    mixed = pred.step_time(4 + 512, 5, 5, 4, 4 * 3000, [(512, 2000)])
    assert mixed > pred.step_time(4, 4, 4, 4, 4 * 3000) + HOST[2] * 512


def test_longest_context_takes_the_serial_walk_term(tmp_path):
    """Fitted on batches of equal contexts, the per-request walk applies to the batch's longest
    context when the simulator knows it: mixed lengths cost more than their mean suggests, in
    single steps and in decode windows alike."""
    prof, _ = calibrated(tmp_path)
    pred = StepTimePredictor(prof, 1, gpu_spec("H100"), 8192)
    b, ctx = 16, 16 * 1000
    even = pred.step_time(b, b, b, b, ctx)
    assert pred.step_time(b, b, b, b, ctx, (), 1000) == pytest.approx(even)  # longest = mean
    spread = pred.step_time(b, b, b, b, ctx, (), 4000)
    assert spread - even == pytest.approx(DEC[3] * 3000, rel=0.05)
    base, slope = pred.decode_window(b, ctx, 4000)
    # the slope is the fit's times the local correction (served_decode.py): close, not equal
    assert base == pytest.approx(spread) and slope == pytest.approx(pred.decode_window(b, ctx)[1], rel=0.02)


def test_eager_floor_bounds_steps_with_prefill_tokens_only(tmp_path):
    """Steps with prefill tokens run eagerly; when the host's launches take 20 ms the trace's small
    prefill steps say so, and the predictor keeps every step with prefill tokens at or above that
    floor, while decode-only (graphed) steps and steps whose ops take longer are unchanged."""
    base, _ = calibrated(tmp_path)
    floored, counts = calibrated(tmp_path, "floored.csv", eager_floor=0.02)
    assert counts["served_eager"] > 50
    assert {p.op for p in base.points} >= {"served_eager"}
    gpu = gpu_spec("H100")
    p0, p1 = StepTimePredictor(base, 1, gpu, 8192), StepTimePredictor(floored, 1, gpu, 8192)
    assert p1.eager_floor == pytest.approx(0.02) and p0.eager_floor < 0.01
    small = (4 + 64, 5, 5, 4, 4 * 3000, [(64, 64)])
    assert p0.step_time(*small) < 0.02 <= p1.step_time(*small)
    assert p1.step_time(4, 4, 4, 4, 4 * 3000) == pytest.approx(p0.step_time(4, 4, 4, 4, 4 * 3000))  # graphed
    big = (8192, 1, 1, 0, 0, [(8192, 8192)])  # a whole long prompt: its ops take longer than the floor
    assert p1.step_time(*big) == pytest.approx(p0.step_time(*big)) and p0.step_time(*big) > 0.02


def test_decode_window_equals_step_by_step_times(tmp_path):
    prof, _ = calibrated(tmp_path)
    pred = StepTimePredictor(prof, 1, gpu_spec("H100"), 8192)
    b, ctx = 12, 12 * 2500
    base, slope = pred.decode_window(b, ctx)
    # linear from the window's start: exact there; the residual correction (served_decode.py) moves
    # with the context, so far into a window the line drifts by a little
    for j, rel in ((0, 1e-9), (1, 1e-3), (10, 5e-3), (500, 0.03)):
        assert base + slope * j == pytest.approx(pred.step_time(b, b, b, b, ctx + j * b), rel=rel)


def test_bad_traces_and_arguments_are_named(tmp_path):
    prof = analytic_profile("llama3-8b", 1, gpu_spec("H100"))
    bad = tmp_path / "bad.csv"
    bad.write_text("start,execute_s\n1.0,0.01\n")
    with pytest.raises(SimInputError, match="lacks columns schedule_s"):
        add_served_points(prof, [bad])
    with pytest.raises(SimInputError, match="does not exist"):
        add_served_points(prof, [tmp_path / "missing.csv"])
    prefill_only = tmp_path / "prefill.csv"
    with open(prefill_only, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows([(i * 0.1, 0, 0, 0.05, 0, 1, 0, 512, 512, 0) for i in range(5)])
    with pytest.raises(SimInputError, match="no decode-only steps"):
        add_served_points(prof, [prefill_only])
    prof2, _ = calibrated(tmp_path)
    with pytest.raises(SimInputError, match="pipeline stages"):
        StepTimePredictor(prof2, 2, gpu_spec("H100"), 8192)


def test_cli_calibrates_a_profile_from_a_gzipped_trace(tmp_path, capsys):
    import argparse

    base = analytic_profile("llama3-8b", 1, gpu_spec("H100")).save(tmp_path / "ops.csv")
    trace = tmp_path / "steps.csv.gz"
    write_trace(trace, steps=500, gzipped=True)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "served.csv"
    assert run(parser.parse_args(["--from-profile", str(base), "--step-trace", str(trace), "--out", str(out)])) == 0
    text = out.read_text()
    assert "served_decode" in text and "served_host" in text
    # calibrating twice, or without a profile, is refused with a message
    assert run(parser.parse_args(["--from-profile", str(out), "--step-trace", str(trace), "--out", str(out)])) == 2
    assert run(parser.parse_args(["--step-trace", str(trace), "--out", str(out)])) == 2
    assert "calibrate" in capsys.readouterr().err


def test_served_sweep_runs_the_engine_and_calibrates(tmp_path):
    """The real engine on the CPU (the simulator's tiny shape, dummy weights) over its 2 x 2 grid:
    every point's decode steps land in the trace with their batch, and the profile gains served points."""
    import argparse

    base = analytic_profile("sim-tiny", 1, gpu_spec("H100")).save(tmp_path / "ops.csv")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "served.csv"
    args = parser.parse_args(["--served-sweep", "--model", "sim-tiny", "--device", "cpu", "--from-profile",
                              str(base), "--out", str(out)])
    assert run(args) == 0
    with open(str(out) + ".steps.csv") as f:
        rows = list(csv.DictReader(f))
    decode_batches = {int(r["num_seqs"]) for r in rows if r["num_prefill_tokens"] == "0"}
    assert decode_batches == {1, 3}
    served = [line.split(",") for line in out.read_text().splitlines() if line.startswith("served_decode")]
    assert {int(f[2]) for f in served} == {1, 3}  # batch column
    ctx = {int(f[3]) for f in served}  # quarter-octave bins of prompt plus the tokens decoded so far
    assert len(ctx) >= 2 and min(ctx) >= 8 and max(ctx) <= 48  # spread points: 3 requests of 2..16 tokens
    longest = [(int(f[1]), int(f[3])) for f in served]  # tokens column: the longest context
    assert all(lo >= c for lo, c in longest) and any(lo > 1.3 * c for lo, c in longest)


def test_spread_contexts():
    from cadence.sim.served_sweep import spread_contexts

    assert spread_contexts(1, 1024, 0.125) == [1024]
    assert spread_contexts(4, 1024, 1.0) == [1024] * 4
    lens = spread_contexts(8, 1024, 0.125)
    assert lens[0] == 128 and lens[-1] == 1024 and lens == sorted(lens) and len(set(lens)) == 8


def test_host_time_from_served_traces_replaces_the_sweeps(tmp_path):
    """A served engine's trace (the loaded probe) gives the host time per step alone; its decode
    steps do not join the sweep's decode points."""
    base, counts = calibrated(tmp_path)
    served = tmp_path / "served.csv"
    write_trace(served, steps=1500, seed=3)
    with open(served, newline="") as f:
        rows = list(csv.reader(f))
    t = 100.0
    for r in rows[1:]:  # the front end triples every host part of a step, and the gap with them
        r[1], r[2], r[4] = (str(3 * float(r[i])) for i in (1, 2, 4))
        r[0] = str(t)
        t += sum(float(r[i]) for i in (1, 2, 3, 4)) + float(r[1])  # write_trace's gap equals its schedule time
    with open(served, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    prof = analytic_profile("llama3-8b", 1, gpu_spec("H100"))
    trace = tmp_path / "steps.csv"
    both = add_served_points(prof, [trace], [served])
    assert both["served_decode"] == counts["served_decode"] and both["served_host"] > 1400
    plain = StepTimePredictor(base, 1, gpu_spec("H100"), 8192)
    loaded = StepTimePredictor(prof, 1, gpu_spec("H100"), 8192)
    for b, prefill in ((1, 0), (8, 0), (21, 512)):
        assert loaded._host(b, prefill) == pytest.approx(3 * plain._host(b, prefill), rel=0.05)
