"""Prometheus metrics of one server: engine gauges and counters read at scrape time, latency
histograms observed per request as the client sees them (from request receipt, server clock)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TBT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


class _EngineCollector(Collector):
    """Reads the engine's last stats snapshot at scrape time, so that scraping never waits on a step."""

    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        gauges = {
            "cadence_num_requests_waiting": ("requests waiting to be scheduled", s["num_waiting"]),
            "cadence_num_requests_running": ("requests in the running batch", s["num_running"]),
            "cadence_kv_cache_usage_ratio": ("share of KV blocks in use (0 to 1)", s["kv_usage"]),
            "cadence_kv_cache_free_blocks": ("KV blocks free", s["kv_free_blocks"]),
            "cadence_kv_cache_total_blocks": ("KV blocks in the pool", s["kv_total_blocks"]),
            "cadence_prefix_cache_hit_rate": ("share of prompt tokens found in the prefix cache",
                                              s["prefix_hit_rate"]),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "cadence_num_preemptions": ("requests preempted (recomputed later) for KV space", "num_preemptions"),
            "cadence_prompt_tokens": ("prompt tokens accepted", "prompt_tokens_total"),
            "cadence_generation_tokens": ("tokens generated", "generation_tokens_total"),
            "cadence_engine_steps": ("engine steps run", "num_steps"),
            "cadence_engine_step_failures": ("engine steps that raised", "num_step_failures"),
        }
        for name, (doc, key) in counters.items():
            yield CounterMetricFamily(name, doc, value=s[key])


class ServerMetrics:
    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self.registry = CollectorRegistry()  # one per server: tests may run several in one process
        self.registry.register(_EngineCollector(stats))
        self.ttft = Histogram("cadence_time_to_first_token_seconds", "request receipt to first token",
                              buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.tbt = Histogram("cadence_time_between_tokens_seconds", "gap between successive tokens of a sequence",
                             buckets=_TBT_BUCKETS, registry=self.registry)
        self.e2e = Histogram("cadence_e2e_request_latency_seconds", "request receipt to last token",
                             buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter("cadence_http_requests", "API requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class RequestTimer:
    """Times one request's sequences: TTFT from receipt, TBT per sequence, E2E at the end."""

    metrics: ServerMetrics | None
    start: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    end: float | None = None
    _last: dict[int, float] = field(default_factory=dict)

    def token(self, index: int, count: int = 1) -> None:
        now = time.monotonic()
        if self.first_token is None:
            self.first_token = now
            if self.metrics:
                self.metrics.ttft.observe(now - self.start)
        last = self._last.get(index)
        if last is not None and self.metrics and count:
            gap = (now - last) / count
            for _ in range(count):
                self.metrics.tbt.observe(gap)
        self._last[index] = now

    def finish(self) -> None:
        self.end = time.monotonic()
        if self.metrics and self.first_token is not None:
            self.metrics.e2e.observe(self.end - self.start)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def e2e(self) -> float | None:
        return None if self.end is None else self.end - self.start
