"""Workloads: how long each request is and when it arrives. Shared by `cadence bench` and the simulator.

A workload is a list of `RequestSpec`. Lengths come from a `LengthDist` (fixed, uniform, lognormal,
zipf) or from a file (CSV trace, ShareGPT JSON); arrival times from `Arrivals` (Poisson, gamma,
constant, trace timestamps; "closed" means the client sends when a slot frees). W1, W2 and W3 are
built exactly as ../shared/WORKLOADS.md defines them.

Randomness: lengths draw from `random.Random(seed)`, arrivals from their own stream
`random.Random(f"arrivals-{seed}")`, as unit-rate gaps scaled by 1/rate, so the same seed gives the
same requests at every rate (common random numbers keep a capacity search's points comparable).
Pure Python; no torch.
"""

from __future__ import annotations

import csv
import json
import math
import random
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path

ARRIVAL_KINDS = ("poisson", "gamma", "constant", "trace", "closed")


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: lengths in tokens, arrival in seconds from the start of the run."""

    request_id: int
    prompt_tokens: int
    output_tokens: int
    arrival_time: float = 0.0
    prompt_token_ids: tuple[int, ...] | None = None  # exact prompt when the workload fixes it (W1)
    prompt_text: str | None = None  # exact text when the workload carries it (ShareGPT)


# ---- length distributions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    value: int

    def sample(self, rng: random.Random) -> int:
        return self.value


@dataclass(frozen=True)
class Uniform:
    low: int
    high: int  # inclusive

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)


@dataclass(frozen=True)
class LogNormal:
    """Lognormal with the given median and sigma (of the log), rounded and clipped to [low, high]."""

    median: float
    sigma: float
    low: int = 1
    high: int = 1 << 30

    def sample(self, rng: random.Random) -> int:
        return min(self.high, max(self.low, round(rng.lognormvariate(math.log(self.median), self.sigma))))


@dataclass(frozen=True)
class Zipf:
    """P(k) proportional to 1 / k**s for k in [low, high]: many short requests, a heavy tail of long ones."""

    s: float
    low: int = 1
    high: int = 4096

    def sample(self, rng: random.Random) -> int:
        return self.low + bisect_left(self._cdf(), rng.random() * self._cdf()[-1])

    def _cdf(self) -> list[float]:
        # Cached on the instance (frozen, so via __dict__) because building it is O(high - low).
        cdf = self.__dict__.get("_cdf_cache")
        if cdf is None:
            cdf = list(accumulate(1.0 / k**self.s for k in range(self.low, self.high + 1)))
            object.__setattr__(self, "_cdf_cache", cdf)
        return cdf


LengthDist = Fixed | Uniform | LogNormal | Zipf


def parse_length_dist(text: str) -> LengthDist:
    """`512`, `fixed:512`, `uniform:100:1024`, `lognormal:600:0.8[:16:4096]`, `zipf:1.1[:1:4096]`."""
    kind, _, rest = text.partition(":")
    args = rest.split(":") if rest else []
    try:
        if kind.isdigit():
            return Fixed(int(kind))
        if kind == "fixed":
            return Fixed(int(args[0]))
        if kind == "uniform":
            return Uniform(int(args[0]), int(args[1]))
        if kind == "lognormal":
            clip = [int(a) for a in args[2:4]]
            return LogNormal(float(args[0]), float(args[1]), *clip)
        if kind == "zipf":
            return Zipf(float(args[0]), *[int(a) for a in args[1:3]])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"bad length distribution {text!r}: {exc}") from exc
    raise ValueError(f"unknown length distribution {text!r} (fixed, uniform, lognormal, zipf)")


def sample_lengths(prompt: LengthDist, output: LengthDist, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(prompt, output) per request, drawn in that order from random.Random(seed)."""
    rng = random.Random(seed)
    return [(prompt.sample(rng), output.sample(rng)) for _ in range(n)]


# ---- arrivals ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrivals:
    """When requests arrive. rate in requests/s (inf = all at t=0); cv is the gamma gaps' coefficient of
    variation (1 = Poisson; vLLM's --burstiness b is cv = 1/sqrt(b)); clients is the closed-loop width."""

    kind: str = "poisson"
    rate: float = math.inf
    cv: float = 1.0
    clients: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise ValueError(f"unknown arrival kind {self.kind!r}; one of {ARRIVAL_KINDS}")
        if self.rate <= 0 or self.cv <= 0 or self.clients < 1:
            raise ValueError("rate and cv must be positive and clients at least 1")

    def times(self, n: int, seed: int = 0) -> list[float]:
        """Arrival times of n requests (all 0 for closed loop, trace or infinite rate)."""
        if self.kind in ("closed", "trace") or math.isinf(self.rate):
            return [0.0] * n
        rng = random.Random(f"arrivals-{seed}")
        if self.kind == "poisson":
            unit = [rng.expovariate(1.0) for _ in range(n)]  # no truncation of the tail
        elif self.kind == "gamma":
            shape = 1.0 / (self.cv * self.cv)
            unit = [rng.gammavariate(shape, 1.0 / shape) for _ in range(n)]
        else:
            unit = [1.0] * n
        # The first request arrives after one gap, as a Poisson process started at 0 would have it.
        return [t / self.rate for t in accumulate(unit)]

    def with_rate(self, rate: float) -> Arrivals:
        return replace(self, rate=rate)


def assign_arrivals(specs: Sequence[RequestSpec], arrivals: Arrivals, seed: int = 0) -> list[RequestSpec]:
    """Give the specs arrival times (trace arrivals keep the times the specs already carry)."""
    if arrivals.kind == "trace":
        return list(specs)
    times = arrivals.times(len(specs), seed)
    return [replace(s, arrival_time=t) for s, t in zip(specs, times, strict=True)]


# ---- workloads from distributions and files ------------------------------------------------------


def synthetic(
    prompt: LengthDist, output: LengthDist, n: int, arrivals: Arrivals, seed: int = 0
) -> list[RequestSpec]:
    specs = [RequestSpec(i, p, o) for i, (p, o) in enumerate(sample_lengths(prompt, output, n, seed))]
    return assign_arrivals(specs, arrivals, seed)


def load_csv_trace(path: str | Path, n: int | None = None) -> list[RequestSpec]:
    """Rows of `num_prefill_tokens,num_decode_tokens[,arrived_at]` (Vidur's trace columns).

    Arrival times are shifted so the first request arrives at 0.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"num_prefill_tokens", "num_decode_tokens"} <= set(rows[0]):
        raise ValueError(f"{path}: needs columns num_prefill_tokens,num_decode_tokens[,arrived_at]")
    rows = rows[:n] if n is not None else rows
    times = [float(r["arrived_at"]) if r.get("arrived_at") not in (None, "") else 0.0 for r in rows]
    t0 = min(times, default=0.0)
    return [
        RequestSpec(i, int(float(r["num_prefill_tokens"])), int(float(r["num_decode_tokens"])), t - t0)
        for i, (r, t) in enumerate(zip(rows, times, strict=True))
    ]


def approx_token_count(text: str) -> int:
    # About 4 characters per token for English with BPE vocabularies; used only without a tokenizer.
    return max(1, round(len(text) / 4))


def load_sharegpt(
    path: str | Path,
    n: int | None = None,
    count_tokens: Callable[[str], int] = approx_token_count,
    seed: int = 0,
    shuffle: bool = True,
    min_tokens: int = 4,
    max_tokens: int = 1 << 20,
) -> list[RequestSpec]:
    """First human turn as the prompt, the reply's length as the output length.

    Conversations with fewer than two turns, or lengths outside [min_tokens, max_tokens], are skipped.
    """
    with open(path) as f:
        data = json.load(f)
    if shuffle:
        random.Random(seed).shuffle(data)
    specs: list[RequestSpec] = []
    for item in data:
        turns = item.get("conversations") or item.get("conversation") or []
        if len(turns) < 2:
            continue
        prompt, reply = turns[0].get("value", ""), turns[1].get("value", "")
        p, o = count_tokens(prompt), count_tokens(reply)
        if not (min_tokens <= p <= max_tokens and min_tokens <= o <= max_tokens):
            continue
        specs.append(RequestSpec(len(specs), p, o, prompt_text=prompt))
        if n is not None and len(specs) >= n:
            break
    return specs


# ---- the named workloads -------------------------------------------------------------------------


def w1() -> list[RequestSpec]:
    """256 requests, all at t=0, prompts of token ids drawn exactly as nano-vllm's benchmark draws them."""
    rng = random.Random(0)
    specs = []
    for k in range(256):
        i = rng.randint(100, 1024)
        o = rng.randint(100, 1024)
        ids = tuple(rng.randint(10, 30000) for _ in range(i))
        specs.append(RequestSpec(k, i, o, 0.0, prompt_token_ids=ids))
    return specs


W2_PROMPT = LogNormal(600, 0.8, 16, 4096)
W2_OUTPUT = LogNormal(250, 0.8, 16, 1024)
W3_PROMPT = LogNormal(6000, 0.5, 1024, 16000)
W3_OUTPUT = LogNormal(200, 0.6, 16, 1024)


def w2(n: int, rate: float, seed: int = 0, arrivals: Arrivals | None = None) -> list[RequestSpec]:
    return synthetic(W2_PROMPT, W2_OUTPUT, n, arrivals or Arrivals("poisson", rate), seed)


def w3(n: int, rate: float, seed: int = 0, arrivals: Arrivals | None = None) -> list[RequestSpec]:
    return synthetic(W3_PROMPT, W3_OUTPUT, n, arrivals or Arrivals("poisson", rate), seed)


NAMED_WORKLOADS = ("W1", "W2", "W3")


def named(
    name: str, n: int | None = None, rate: float = math.inf, seed: int = 0, arrivals: Arrivals | None = None
) -> list[RequestSpec]:
    """W1 (fixed: 256 requests at t=0), or W2/W3 with n requests (default 1000) at the given rate."""
    key = name.upper()
    if key == "W1":
        specs = w1()
        return (
            specs if arrivals is None or arrivals.kind == "closed" else assign_arrivals(specs, arrivals, seed)
        )
    if key in ("W2", "W3"):
        build = w2 if key == "W2" else w3
        return build(n or 1000, rate, seed, arrivals)
    raise ValueError(f"unknown workload {name!r}; one of {NAMED_WORKLOADS}")


def describe(specs: Sequence[RequestSpec]) -> dict:
    """A small fingerprint of a workload for result files."""
    prompts = [s.prompt_tokens for s in specs]
    outputs = [s.output_tokens for s in specs]
    return {
        "num_requests": len(specs),
        "total_prompt_tokens": sum(prompts),
        "total_output_tokens": sum(outputs),
        "mean_prompt_tokens": sum(prompts) / len(specs) if specs else 0.0,
        "mean_output_tokens": sum(outputs) / len(specs) if specs else 0.0,
        "last_arrival_s": max((s.arrival_time for s in specs), default=0.0),
    }
