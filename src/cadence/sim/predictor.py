"""Step time from a profile: what the simulator's clock advances by for one scheduled batch.

Everything the step loop touches is a list index or a few multiply-adds: per-token costs are
tabulated once for every token count up to the largest step, attention costs are linear fits.
A replica with PP stages runs `layers / pp` layers per stage; its step time here is one stage's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cadence.core.graph_buckets import decode_batch_buckets, padded, piecewise_token_buckets
from cadence.sim.errors import SimInputError
from cadence.sim.fits import fit_interp, fit_linear
from cadence.sim.hardware import GPUSpec, send_seconds
from cadence.sim.operators import ALL_OPS, roofline_attn_decode, roofline_token_op
from cadence.sim.profile_data import Profile
from cadence.sim.served_decode import ServedDecodeModel
from cadence.sim.shapes import DTYPE_BYTES, model_config, shard


def _median_time(by_op: dict, op: str) -> float:
    """The median time of an optional operator's points (0 when the profile has none)."""
    points = by_op.get(op)
    return statistics.median(p.time_s for p in points) if points else 0.0


@dataclass(frozen=True)
class Coverage:
    max_tokens: int
    max_batch: int
    max_decode_context: int
    max_prefill_tokens: int
    max_prefill_context: int


class StepTimePredictor:
    def __init__(self, profile: Profile, pp: int, gpu: GPUSpec, max_step_tokens: int,
                 overlap_host: bool = False, graph_max_batch: int = 0, piecewise_max_tokens: int = 0) -> None:
        """`overlap_host`: the engine's async scheduling, where the host plans and launches step n+1
        while the device runs step n, so a step lasts the longer of the two instead of their sum.
        `graph_max_batch`: decode-only steps of up to this many requests replay CUDA graphs, padded
        to the engine's batch buckets (0: no padding). `piecewise_max_tokens`: steps with prefill
        tokens of up to this many tokens replay piecewise graphs, padded to the token buckets (0:
        eager). Both as the engine does (core/graph_buckets.py)."""
        self.overlap_host = overlap_host
        by_op = profile.by_op()
        missing = [op for op in ALL_OPS if op not in by_op]
        if missing:
            raise SimInputError(f"profile of {profile.model} tp={profile.tp} lacks operators: {', '.join(missing)}")
        mc = model_config(profile.model)
        if mc.num_layers % pp:
            raise SimInputError(f"{profile.model} has {mc.num_layers} layers, which do not split into pp={pp} stages")
        self.profile, self.pp = profile, pp
        self.layers = mc.num_layers // pp
        fits = {op: fit_interp(op, by_op[op]) for op in
                ("norm", "qkv_proj", "rope", "o_proj", "mlp_gate_up", "act", "mlp_down", "embed", "lm_head",
                 "sampler", "all_reduce")}
        self.decode = fit_linear("attn_decode", by_op["attn_decode"]).coef
        self.prefill = fit_linear("attn_prefill", by_op["attn_prefill"]).coef
        self.cpu = fit_linear("cpu_step", by_op["cpu_step"]).coef
        self.coverage = Coverage(
            max_tokens=int(max(fits["qkv_proj"].xs)),
            max_batch=int(min(max(fits["sampler"].xs), max(p.batch for p in by_op["attn_decode"]))),
            max_decode_context=max(p.context for p in by_op["attn_decode"]),
            max_prefill_tokens=max(p.tokens for p in by_op["attn_prefill"]),
            max_prefill_context=max(p.context for p in by_op["attn_prefill"]),
        )
        self.check_covers(max_step_tokens=max_step_tokens)
        n = max_step_tokens + 1
        tab = {op: f.table(n) for op, f in fits.items()}
        self.launch_overhead: dict[str, float] = {}
        if profile.source == "measured" and profile.device.lower() != "cpu":
            self._strip_launch_overhead(tab, mc, gpu)
        L = self.layers
        # First stage embeds, last stage norms + lm_head + samples; with pp=1 one stage does all.
        # A stage's dense time per token count; the lm_head/sampler part is keyed by sampled rows.
        self.dense = [L * (2 * tab["norm"][t] + tab["qkv_proj"][t] + tab["rope"][t] + tab["o_proj"][t]
                           + tab["mlp_gate_up"][t] + tab["act"][t] + tab["mlp_down"][t] + 2 * tab["all_reduce"][t])
                      + (tab["embed"][t] + tab["norm"][t] if pp == 1 else 0.0)
                      + (send_seconds(t * mc.hidden_size * DTYPE_BYTES, gpu) if pp > 1 and t else 0.0)
                      for t in range(n)]  # fmt: skip
        self.head = [tab["lm_head"][b] + tab["sampler"][b] for b in range(n)]
        self.max_step_tokens = max_step_tokens
        # what a step's forward runs at: decode-only steps by batch, steps with prefill by tokens (0: eager)
        batches = decode_batch_buckets(graph_max_batch) if graph_max_batch else []
        self._batch_pad = [min(padded(b, batches) or b, n - 1) if b else 0 for b in range(n)]
        pieces = piecewise_token_buckets(min(piecewise_max_tokens, max_step_tokens)) if piecewise_max_tokens else []
        self._token_pad = [padded(t, pieces) or 0 if t else 0 for t in range(n)]
        d0, d1, d2 = self.decode
        if self.launch_overhead:  # the decode kernel's fixed part is launch-bound when timed alone
            s = shard(profile.model, mc, profile.tp)
            floor = roofline_attn_decode(s, gpu, 1, 128)
            self.launch_overhead["attn_decode"] = max(0.0, d0 - floor)
            d0 = min(d0, floor)
        self._dec_fixed, self._dec_per_req, self._dec_per_ctx = L * d0, L * d1, L * d2
        c0, c1 = self.cpu
        self._cpu0, self._cpu1 = c0, c1
        # Served-step calibration (calibration.py), when the profile carries it: decode-only steps
        # and host time as the engine measured them while serving, instead of the sum of ops.
        self.served_decode = ServedDecodeModel(by_op["served_decode"]) if by_op.get("served_decode") else None
        self.served_host = fit_linear("served_host", by_op["served_host"]).coef if by_op.get("served_host") else None
        # the eager floor: a step with prefill tokens takes at least the host's eager launch time
        self.eager_floor = _median_time(by_op, "served_eager")
        # a piecewise-graphed step with prefill, as replayed: its bucket's dense part (less attention)
        self.served_prefill = fit_interp("served_prefill", by_op["served_prefill"]) if by_op.get("served_prefill") else None
        # the request's way in (client -> engine) and its tokens' way out (engine -> client)
        self.request_in_s = _median_time(by_op, "served_request_in")
        self.request_out_s = _median_time(by_op, "served_request_out")
        if self.served_decode is not None and pp > 1:
            raise SimInputError("a served-step calibration describes a whole replica; it cannot be split into "
                                "pipeline stages (use an uncalibrated profile with pp > 1)")

    def _strip_launch_overhead(self, tab: dict[str, list[float]], mc, gpu: GPUSpec) -> None:
        """`cadence profile` times each operator alone between two CUDA events, so a small kernel's
        time is mostly the host's launch of it (40-130 us for a norm of one token on the H100, whose
        kernel runs a few us). The engine replays decode steps as CUDA graphs and, in eager steps,
        launches ahead of a busy GPU, so that launch time is not on a step's critical path. Per op,
        the excess over the roofline at one token is taken as launch overhead and subtracted at every
        token count, never below the op's roofline."""
        s = shard(self.profile.model, mc, self.profile.tp)
        for op in ("norm", "qkv_proj", "rope", "o_proj", "mlp_gate_up", "act", "mlp_down", "embed"):
            t = tab[op]
            over = max(0.0, t[1] - roofline_token_op(op, s, gpu, 1))
            self.launch_overhead[op] = over
            for i in range(1, len(t)):
                t[i] = max(t[i] - over, roofline_token_op(op, s, gpu, i))

    def check_covers(self, max_step_tokens: int = 0, max_batch: int = 0, max_context: int = 0) -> None:
        c, name = self.coverage, f"profile of {self.profile.model} tp={self.profile.tp}"
        if max_step_tokens > c.max_tokens:
            raise SimInputError(f"{name} covers steps of up to {c.max_tokens} tokens; this configuration needs "
                                f"{max_step_tokens} (token budget or longest whole prefill)")
        if max_batch > c.max_batch:
            raise SimInputError(f"{name} covers batches of up to {c.max_batch} requests; max batch is {max_batch}")
        if max_context > min(c.max_decode_context, c.max_prefill_context):
            raise SimInputError(f"{name} covers contexts of up to {min(c.max_decode_context, c.max_prefill_context)}"
                                f" tokens; requests here reach {max_context}")

    def _host(self, num_reqs: int, prefill_tokens: int) -> float:
        if self.served_host is not None:
            h0, h1, h2 = self.served_host
            return h0 + h1 * num_reqs + h2 * prefill_tokens
        return self._cpu0 + self._cpu1 * num_reqs

    def _served_decode(self, batch: int, ctx_sum: int, ctx_max: int | None = None) -> float:
        """A decode-only step as served (served_decode.py); the longest context matters beside the
        sum (the kernel's blocks of the longest request finish last). Longest unknown: the mean."""
        assert self.served_decode is not None
        return self.served_decode(batch, ctx_sum, ctx_max)

    def step_time(self, num_tokens: int, num_sampled: int, num_reqs: int, decode_batch: int, decode_ctx: int,
                  prefills: Sequence[tuple[int, int]] = (), decode_max_ctx: int | None = None) -> float:
        """One step (one stage with PP): `decode_ctx` sums the decodes' contexts and
        `decode_max_ctx` is the longest (None: take the mean); prefills holds (chunk tokens, keys
        after the chunk) per prefilling request."""
        host = self._host(num_reqs, num_tokens - decode_batch)
        decode_only = not prefills and num_tokens == decode_batch
        if decode_batch and decode_max_ctx is None:
            decode_max_ctx = max(1, round(decode_ctx / decode_batch))
        if decode_only:  # a decode graph of the batch's bucket
            pb = self._batch_pad[decode_batch]
            if self.served_decode is not None:
                return self._combine(host, self._served_decode(pb, decode_ctx, decode_max_ctx))
            t = (self.dense[pb] + self.head[pb] + self._dec_fixed + self._dec_per_req * decode_batch
                 + self._dec_per_ctx * decode_ctx)
            return self._combine(host, t)
        # a step with prefill tokens: piecewise graphs at its token bucket, or eager
        graphed = self._token_pad[num_tokens]
        if graphed and self.served_prefill is not None:
            t = self.served_prefill(graphed) + self.head[num_sampled] - self.head[1]
        else:
            t = self.dense[graphed or num_tokens] + self.head[num_sampled]
        if decode_batch:  # the decodes' attention, as served where the profile says
            if self.served_decode is not None:
                served = self._served_decode(decode_batch, decode_ctx, decode_max_ctx)
                t += max(0.0, served - self.dense[decode_batch] - self.head[decode_batch])
            else:
                t += self._dec_fixed + self._dec_per_req * decode_batch + self._dec_per_ctx * decode_ctx
        if prefills:
            a, b, c, d = self.prefill
            L = self.layers
            for q, kv in prefills:
                t += L * (a + b * q + c * q * (kv - q / 2) + d * kv)
        if not graphed:  # eager: the device cannot finish before the host has launched it all
            t = max(t, self.eager_floor)
        return self._combine(host, t)

    def _combine(self, host: float, device: float) -> float:
        return max(host, device) if self.overlap_host else host + device

    def decode_window(self, batch: int, ctx_sum: int, ctx_max: int | None = None) -> tuple[float, float]:
        """A pure-decode step over `batch` requests costs base + slope * j at the j-th step from
        here (each step adds one key per request): returns (base, slope). With overlapped host work
        the window takes whichever of host and device is longer at its start (the device's growth
        over a window is microseconds a step)."""
        pb = self._batch_pad[batch]
        if self.served_decode is not None:
            longest = ctx_max if ctx_max is not None else max(1, round(ctx_sum / batch))
            host, device = self._host(batch, 0), self._served_decode(pb, ctx_sum, longest)
            slope = self.served_decode.slope(pb, ctx_sum, longest, requests=batch)
        else:
            host = self._host(batch, 0)
            device = (self.dense[pb] + self.head[pb] + self._dec_fixed + self._dec_per_req * batch
                      + self._dec_per_ctx * ctx_sum)
            slope = self._dec_per_ctx * batch
        if self.overlap_host and host > device:
            return host, 0.0
        return self._combine(host, device), slope
