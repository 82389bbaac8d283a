"""Send a workload: open loop (each request at its scheduled time, whatever the server does) or closed loop.

Open loop: one dispatcher coroutine sleeps until the next scheduled arrival (no busy-wait: the event
loop's timer, about 1 ms of granularity) and starts the request as its own task, so a slow server
delays no later arrival. Latency counts from the scheduled arrival, so neither the client's lateness
nor a --max-concurrency queue can hide time from the measurement; the lateness is recorded
(`dispatch_lag`) so the meter's own error is visible in every result.
Closed loop: N clients, each sends its next request as soon as its previous one ends; a request's
arrival is the moment it is sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from cadence.bench.client import BenchClient, EndpointConfig, Prompt, StreamInfo
from cadence.bench.precise_loop import run_precise
from cadence.bench.progress import Progress
from cadence.core.metrics import RequestRecord
from cadence.core.workload import RequestSpec

START_LEAD_S = 0.05  # the run clock starts this long after setup so the first arrival is not already late


@dataclass
class RunResult:
    records: list[RequestRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    count_sources: Counter = field(default_factory=Counter)
    count_mismatches: int = 0
    models_seen: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time during the run: the client's own cost


class Runner:
    def __init__(
        self,
        cfg: EndpointConfig,
        prompts: Sequence[Prompt],
        count_text=None,
        progress: Progress | None = None,
        warmup: int = 0,
    ) -> None:
        self.cfg = cfg
        self.warmup = warmup
        self.prompts = prompts
        self.count_text = count_text
        self.progress = progress
        self.result = RunResult()  # filled as requests end, so an interrupted run still has what finished

    def _record(self, record: RequestRecord, info: StreamInfo) -> None:
        self.result.records.append(record)
        self.result.count_sources[info.count_source] += record.ok
        self.result.count_mismatches += info.count_mismatch
        if info.model:
            self.result.models_seen[info.model] += 1
        if self.progress:
            self.progress.done += 1
            self.progress.failed += not record.ok
            self.progress.tokens += record.output_tokens

    async def _one(
        self, client: BenchClient, spec: RequestSpec, arrival: float, sem: asyncio.Semaphore | None
    ) -> None:
        if self.progress:
            self.progress.sent += 1
        if sem is None:
            record, info = await client.send(
                str(spec.request_id), arrival, self.prompts[spec.request_id], spec.output_tokens
            )
        else:
            async with sem:
                record, info = await client.send(
                    str(spec.request_id), arrival, self.prompts[spec.request_id], spec.output_tokens
                )
        self._record(record, info)

    async def run(
        self,
        specs: Sequence[RequestSpec],
        max_concurrency: int | None = None,
        closed_clients: int | None = None,
    ) -> RunResult:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        clock0 = time.perf_counter() + START_LEAD_S
        async with BenchClient(self.cfg, clock0, self.count_text) as client:
            models = await client.list_models()
            self._check_models(models)
            if self.warmup:
                await self._warm(client)
                client.clock0 = time.perf_counter() + START_LEAD_S
            if self.progress:
                self.progress.begin()
            try:
                if closed_clients:
                    await self._closed(client, specs, closed_clients)
                else:
                    await self._open(client, specs, max_concurrency)
            finally:
                if self.progress:
                    self.progress.finish()
        self.result.wall_s = time.perf_counter() - wall0
        self.result.cpu_s = time.process_time() - cpu0
        self.result.records.sort(key=lambda r: int(r.request_id) if r.request_id.isdigit() else 0)
        return self.result

    async def _warm(self, client: BenchClient) -> None:
        """Concurrent one-token requests before the clock starts: they open (keep-alive) connections
        and wake the server, so the measured run pays neither TCP setup nor first-request costs."""
        # The same form as the run's prompts: a server without a tokenizer refuses text.
        first = self.prompts[0] if self.prompts else None
        prompt = Prompt(1, token_ids=first.token_ids[:1]) if first and first.token_ids else Prompt(1, text="hi")
        done = await asyncio.gather(*(client.send(f"warmup-{i}", 0.0, prompt, 1) for i in range(self.warmup)))
        failed = sum(not record.ok for record, _ in done)
        self.result.notes.append(
            f"warm-up: {self.warmup} one-token requests before the clock ({failed} failed)"
        )

    async def _open(
        self, client: BenchClient, specs: Sequence[RequestSpec], max_concurrency: int | None
    ) -> None:
        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        tasks: list[asyncio.Task] = []
        try:
            for spec in sorted(specs, key=lambda s: s.arrival_time):
                delay = spec.arrival_time - client.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(client, spec, spec.arrival_time, sem)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _closed(self, client: BenchClient, specs: Sequence[RequestSpec], clients: int) -> None:
        queue = list(reversed(specs))

        async def worker() -> None:
            while queue:
                spec = queue.pop()
                await self._one(client, spec, client.now(), None)

        await asyncio.gather(*(worker() for _ in range(min(clients, len(specs)))))

    def _check_models(self, models: list[str] | str) -> None:
        if isinstance(models, str):
            self.result.notes.append(f"preflight: {models}")
        elif self.cfg.model not in models:
            self.result.notes.append(
                f"preflight: model {self.cfg.model!r} is not among the served models {models[:10]}"
            )

    def finalize_notes(self, prompts_exact: bool) -> None:
        r = self.result
        if not prompts_exact:
            r.notes.append(
                "prompt lengths are approximate (no tokenizer); server-reported prompt_tokens used where sent"
            )
        sources = dict(r.count_sources)
        if sources and set(sources) != {"usage"}:
            r.notes.append(f"tokens per chunk counted from: {sources} (exact only from server usage stats)")
        if r.count_mismatches:
            r.notes.append(
                f"{r.count_mismatches} requests: server's final token count differs from tokens seen in the stream"
            )
        if len(r.models_seen) > 1 or (r.models_seen and self.cfg.model not in r.models_seen):
            r.notes.append(f"responses named models {dict(r.models_seen)} (asked for {self.cfg.model!r})")


def run_workload(
    cfg: EndpointConfig,
    specs: Sequence[RequestSpec],
    prompts: Sequence[Prompt],
    *,
    max_concurrency: int | None = None,
    closed_clients: int | None = None,
    count_text=None,
    progress: Progress | None = None,
    runner: Runner | None = None,
    warmup: int = 0,
) -> RunResult:
    """Synchronous entry point: runs the workload on a fresh event loop and returns every record."""
    if any(math.isinf(s.arrival_time) or s.arrival_time < 0 for s in specs):
        raise ValueError("arrival times must be finite and non-negative")
    runner = runner or Runner(cfg, prompts, count_text, progress, warmup)
    result = run_precise(runner.run(specs, max_concurrency, closed_clients))
    runner.finalize_notes(all(p.exact for p in prompts))
    return result
