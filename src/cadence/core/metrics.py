"""Request metrics with one definition everywhere: the engine's server, `cadence bench` and the simulator.

Every time is in seconds on one clock chosen by the producer (the bench uses a run clock that starts
at 0; the simulator its simulated clock). Definitions follow ../shared/WORKLOADS.md:

- TTFT: arrival to first output token.  TBT: each gap between consecutive output tokens.
- TPOT: mean TBT of a request.  E2E: arrival to last token.  Normalized latency: E2E / output tokens.
- Scheduling delay: arrival to first scheduled (known only where the producer can see the scheduler).
- Deadlines and fluidity-index as in Metron (see `deadline_misses`).

Pure Python; no torch, no numpy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)


@dataclass(frozen=True)
class RequestRecord:
    """What happened to one request, as timestamps. Built by the bench client or the simulator."""

    request_id: str
    arrival_time: float  # scheduled arrival; latencies count from here, so a client queue cannot hide
    prompt_tokens: int
    output_tokens: int  # tokens generated (server-reported when it says so, else counted)
    token_times: tuple[float, ...] = ()  # one entry per output token; a chunk of k tokens gives k equal times
    target_output_tokens: int | None = None  # what was asked for (max_tokens)
    first_scheduled_time: float | None = None  # None where it cannot be observed (an external server)
    send_time: float | None = None  # when the client really sent it (>= arrival_time)
    finish_time: float | None = None  # when the response ended (success or not)
    error: str | None = None  # error kind ("connect", "http_500", "malformed_stream", ...); None = success
    error_detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


# ---- per-request metrics -------------------------------------------------------------------------


def ttft(r: RequestRecord) -> float | None:
    return r.token_times[0] - r.arrival_time if r.token_times else None


def tbts(r: RequestRecord) -> list[float]:
    t = r.token_times
    return [t[k] - t[k - 1] for k in range(1, len(t))]


def tpot(r: RequestRecord) -> float | None:
    # The mean of the gaps telescopes to (last - first) / gaps.
    n = len(r.token_times)
    return (r.token_times[-1] - r.token_times[0]) / (n - 1) if n >= 2 else None


def e2e(r: RequestRecord) -> float | None:
    return r.token_times[-1] - r.arrival_time if r.token_times else None


def normalized_latency(r: RequestRecord) -> float | None:
    total = e2e(r)
    return total / r.output_tokens if total is not None and r.output_tokens > 0 else None


def scheduling_delay(r: RequestRecord) -> float | None:
    return r.first_scheduled_time - r.arrival_time if r.first_scheduled_time is not None else None


def dispatch_lag(r: RequestRecord) -> float | None:
    """How late the client sent the request after its scheduled arrival: the meter's own error."""
    return r.send_time - r.arrival_time if r.send_time is not None else None


# ---- Metron deadlines ----------------------------------------------------------------------------


def deadline_misses(
    gaps: Sequence[float], prefill_deadline: float, decode_deadline: float
) -> tuple[int, int]:
    """Metron's deadline accounting over gaps t_0 (arrival to first token), t_1, t_2, ... (between tokens).

    Returns (missed, total). Time saved on early tokens carries over as slack; a miss resets it.
    """
    if decode_deadline <= 0:
        raise ValueError("decode deadline must be positive")
    slack = 0.0
    total = 0
    missed = 0
    for k, gap in enumerate(gaps):
        deadline = prefill_deadline if k == 0 else decode_deadline
        if gap <= deadline + slack:
            slack += deadline - gap
            total += 1
            continue
        if k == 0:
            misses = 1 + math.floor((gap - slack - prefill_deadline) / decode_deadline)
        else:
            misses = math.floor((gap - slack) / decode_deadline)
        missed += misses
        total += misses
        slack = 0.0
    return missed, total


def token_gaps(r: RequestRecord) -> list[float]:
    """t_0 = arrival to first token, then each TBT: the sequence Metron's deadlines are checked on."""
    first = ttft(r)
    return [] if first is None else [first, *tbts(r)]


def fluidity_index(r: RequestRecord, prefill_deadline: float, decode_deadline: float) -> float | None:
    missed, total = deadline_misses(token_gaps(r), prefill_deadline, decode_deadline)
    return 1.0 - missed / total if total else None


@dataclass(frozen=True)
class Deadlines:
    """Per-request deadlines: D_p = prefill_slack + prefill_per_token * prompt tokens, D_d = decode.

    Metron predicts the prefill time from the prompt length and adds 0.3 s; from outside a server
    the prediction must be supplied (prefill_per_token), so it defaults to 0 (D_p = 0.3 s flat).
    """

    decode: float = 0.05
    prefill_slack: float = 0.3
    prefill_per_token: float = 0.0

    def prefill_for(self, r: RequestRecord) -> float:
        return self.prefill_slack + self.prefill_per_token * r.prompt_tokens


def fluent_token_rate(
    records: Iterable[RequestRecord],
    prefill_deadline: Callable[[RequestRecord], float],
    min_fluidity: float = 0.9,
    fraction: float = 0.99,
    rate_bounds: tuple[float, float] = (0.1, 10_000.0),
    rel_precision: float = 1e-3,
) -> float | None:
    """Highest per-request token rate 1/D_d at which `fraction` of requests keep fluidity >= min_fluidity.

    Found by bisection on log(rate), which assumes a looser decode deadline never lowers the fraction
    of fluent requests. Returns None when even the lowest rate fails (or there are no requests).
    """
    rows = [(token_gaps(r), prefill_deadline(r)) for r in records if r.ok and r.token_times]
    if not rows:
        return None

    def passes(rate: float) -> bool:
        good = 0
        for gaps, d_p in rows:
            missed, total = deadline_misses(gaps, d_p, 1.0 / rate)
            good += total > 0 and 1.0 - missed / total >= min_fluidity
        return good >= fraction * len(rows)

    lo, hi = rate_bounds
    if not passes(lo):
        return None
    if passes(hi):
        return hi
    while hi / lo > 1.0 + rel_precision:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


# ---- distributions -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(
    values: Iterable[float], percentiles: Sequence[float] = PERCENTILES
) -> dict[str, float | int]:
    """count, mean, min, p50/p90/p95/p99 and max of the values (count only when there are none)."""
    xs = sorted(values)
    if not xs:
        return {"count": 0}
    out: dict[str, float | int] = {"count": len(xs), "mean": math.fsum(xs) / len(xs), "min": xs[0]}
    for p in percentiles:
        out[f"p{p:g}"] = percentile(xs, p)
    out["max"] = xs[-1]
    return out


# ---- SLOs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSLO:
    """Per-request limits for goodput (a request counts only if it meets every limit that is set)."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    max_tbt: float | None = None

    def is_set(self) -> bool:
        return any(v is not None for v in (self.ttft, self.tpot, self.e2e, self.max_tbt))

    def met_by(self, r: RequestRecord) -> bool:
        if not r.ok or not r.token_times:
            return False
        checks = (
            (self.ttft, ttft(r)),
            (self.tpot, tpot(r)),
            (self.e2e, e2e(r)),
            (self.max_tbt, max(tbts(r), default=None)),
        )
        return all(limit is None or value is None or value <= limit for limit, value in checks)


@dataclass(frozen=True)
class ServiceSLO:
    """Limits on a whole run, as capacity search uses them (WORKLOADS.md: P99 TBT and median scheduling delay)."""

    p99_tbt: float | None = None
    p90_ttft: float | None = None
    median_scheduling_delay: float | None = None
    deadline_miss_rate: float | None = None  # missed / total over all deadlines of all requests
    max_error_rate: float = 0.0

    def check(self, summary: dict) -> list[str]:
        """Reasons the summary violates this SLO; an empty list means it is met."""
        reasons: list[str] = []

        def over(name: str, value: float | None, limit: float | None) -> None:
            if limit is None:
                return
            if value is None:
                reasons.append(f"{name}: no data")
            elif value > limit:
                reasons.append(f"{name} {value:.4g} > {limit:.4g}")

        over("P99 TBT", summary["tbt"].get("p99"), self.p99_tbt)
        over("P90 TTFT", summary["ttft"].get("p90"), self.p90_ttft)
        sched = summary["scheduling_delay"] if summary["scheduling_delay"]["count"] else summary["ttft"]
        over("median scheduling delay", sched.get("p50"), self.median_scheduling_delay)
        over("deadline miss rate", summary["deadlines"].get("miss_rate"), self.deadline_miss_rate)
        over("error rate", summary["requests"]["error_rate"], self.max_error_rate)
        return reasons


# ---- whole-run summary ---------------------------------------------------------------------------


def run_duration(records: Sequence[RequestRecord]) -> float:
    """First arrival to the last token (or response end) of any request."""
    if not records:
        return 0.0
    start = min(r.arrival_time for r in records)
    ends = [r.token_times[-1] for r in records if r.token_times]
    ends += [r.finish_time for r in records if r.finish_time is not None]
    return max(ends, default=start) - start


@dataclass(frozen=True)
class SummaryOptions:
    deadlines: Deadlines = field(default_factory=Deadlines)
    request_slo: RequestSLO = field(default_factory=RequestSLO)
    percentiles: tuple[float, ...] = PERCENTILES
    fluent_rate: bool = True  # the bisection costs O(requests * tokens * 14); off for huge sweeps


def summarize(
    records: Sequence[RequestRecord], options: SummaryOptions | None = None, duration: float | None = None
) -> dict:
    """Every run-level metric as a JSON-ready dict. Latency metrics use successful requests only."""
    opts = options or SummaryOptions()
    ok = [r for r in records if r.ok]
    dur = run_duration(records) if duration is None else duration
    pcts = opts.percentiles

    def dist(fn: Callable[[RequestRecord], float | None]) -> dict:
        return distribution((v for v in map(fn, ok) if v is not None), pcts)

    missed = total = 0
    fluidities: list[float] = []
    for r in ok:
        m, t = deadline_misses(token_gaps(r), opts.deadlines.prefill_for(r), opts.deadlines.decode)
        missed, total = missed + m, total + t
        if t:
            fluidities.append(1.0 - m / t)
    fluent = fluent_token_rate(ok, opts.deadlines.prefill_for) if opts.fluent_rate else None

    errors = Counter(r.error for r in records if r.error is not None)
    in_tokens = sum(r.prompt_tokens for r in ok)
    out_tokens = sum(r.output_tokens for r in ok)
    per_s = (lambda x: x / dur) if dur > 0 else (lambda x: 0.0)
    good = sum(opts.request_slo.met_by(r) for r in ok) if opts.request_slo.is_set() else None
    short = sum(
        1 for r in ok if r.target_output_tokens is not None and r.output_tokens < r.target_output_tokens
    )
    return {
        "requests": {
            "total": len(records),
            "completed": len(ok),
            "failed": len(records) - len(ok),
            "error_rate": (len(records) - len(ok)) / len(records) if records else 0.0,
            "errors_by_kind": dict(sorted(errors.items())),
            "short_outputs": short,
        },
        "duration_s": dur,
        "throughput": {
            "requests_per_s": per_s(len(ok)),
            "input_tokens_per_s": per_s(in_tokens),
            "output_tokens_per_s": per_s(out_tokens),
            "total_input_tokens": in_tokens,
            "total_output_tokens": out_tokens,
        },
        "goodput": None
        if good is None
        else {"requests": good, "requests_per_s": per_s(good), "slo": _slo_dict(opts.request_slo)},
        "ttft": dist(ttft),
        "tbt": distribution((g for r in ok for g in tbts(r)), pcts),
        "tpot": dist(tpot),
        "e2e": dist(e2e),
        "normalized_latency": dist(normalized_latency),
        "scheduling_delay": dist(scheduling_delay),
        "dispatch_lag": distribution((v for v in map(dispatch_lag, records) if v is not None), pcts),
        "prompt_tokens": distribution((r.prompt_tokens for r in ok), pcts),
        "output_tokens": distribution((r.output_tokens for r in ok), pcts),
        "deadlines": {
            "decode_deadline_s": opts.deadlines.decode,
            "prefill_slack_s": opts.deadlines.prefill_slack,
            "prefill_per_token_s": opts.deadlines.prefill_per_token,
            "missed": missed,
            "total": total,
            "miss_rate": missed / total if total else None,
            "fluidity_index": distribution(fluidities, pcts),
            "fluent_token_rate": fluent,
        },
    }


def _slo_dict(slo: RequestSLO) -> dict:
    return {
        k: v
        for k, v in (("ttft", slo.ttft), ("tpot", slo.tpot), ("e2e", slo.e2e), ("max_tbt", slo.max_tbt))
        if v is not None
    }
