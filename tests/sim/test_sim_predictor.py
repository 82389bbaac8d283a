"""The predictor: per-operator fits with held-out error, and step times that behave physically."""

from __future__ import annotations

import random

import pytest

from cadence.sim.fits import heldout_errors
from cadence.sim.hardware import gpu_spec
from cadence.sim.predictor import StepTimePredictor
from cadence.sim.profile_data import Profile, load_profile
from cadence.sim.roofline import analytic_profile


def _noisy(prof: Profile, noise: float, seed: int = 0) -> Profile:
    rng = random.Random(seed)
    out = Profile(prof.model, prof.tp, prof.device, "synthetic")
    for p in prof.points:
        out.add(p.op, p.time_s * (1 + rng.uniform(-noise, noise)), p.tokens, p.batch, p.context)
    return out


def test_heldout_error_per_operator_on_synthetic_profile():
    prof = _noisy(analytic_profile("llama3-8b", 1, gpu_spec("H100")), 0.03)
    errs = heldout_errors(prof)
    assert {"attn_decode", "attn_prefill", "qkv_proj", "mlp_down", "cpu_step"} <= set(errs)
    for op, e in errs.items():
        # 3% measurement noise; physically shaped fits stay within a few times that
        assert e["fit_mape"] < 0.15, (op, e)
    assert errs["attn_decode"]["fit_mape"] < errs["attn_decode"]["random_forest_mape"]


def test_profile_round_trip(tmp_path):
    prof = analytic_profile("qwen3-0.6b", 1, gpu_spec("H100"))
    back = load_profile(prof.save(tmp_path / "p.csv"))
    assert (back.model, back.tp, back.source) == ("qwen3-0.6b", 1, "analytic-roofline")
    assert len(back.points) == len(prof.points)


def test_step_time_grows_with_tokens_context_and_tp_shrinks_it():
    gpu = gpu_spec("H100")
    p1 = StepTimePredictor(analytic_profile("llama3-8b", 1, gpu), 1, gpu, 4096)
    p2 = StepTimePredictor(analytic_profile("llama3-8b", 2, gpu), 1, gpu, 4096)
    dec = p1.step_time(64, 64, 64, 64, 64 * 1000)
    assert p1.step_time(64, 64, 64, 64, 64 * 4000) > dec
    assert p1.step_time(2048, 1, 1, 0, 0, [(2048, 2048)]) > p1.step_time(512, 1, 1, 0, 0, [(512, 512)])
    assert p2.step_time(64, 64, 64, 64, 64 * 1000) < dec
    # an 8B decode step streams ~16 GB of weights: several ms on an H100
    assert 4e-3 < dec < 20e-3
    base, slope = p1.decode_window(64, 64 * 1000)
    assert base == pytest.approx(dec)
    assert slope > 0
