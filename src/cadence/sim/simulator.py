"""Discrete-event simulation of replicas behind a router, on a predicted clock.

Events are request arrivals and micro-batch completions. A step is the engine's three verbs:
`scheduler.schedule(now)`, a predicted duration instead of the model, `scheduler.update_from_output`.

Decode windows (the speed-up that keeps 16k requests within seconds): when nothing waits and every
running request is decoding, each built-in policy decodes every running request once per step, so
the next k steps are known in advance until the next arrival, the first request to finish, or the
KV pool running short. Such a window is applied in one go through the same KV manager (slots for k
tokens) and the scheduler's own finish path; `exact_steps=True` turns windows off, and the tests
check that both give identical timelines for every policy.
"""

from __future__ import annotations

import gc
import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cadence.core.config import SchedulerConfig
from cadence.core.metrics import RequestRecord
from cadence.core.request import Request
from cadence.core.sampling_params import SamplingParams
from cadence.core.workload import RequestSpec
from cadence.sim.errors import SimInputError
from cadence.sim.predictor import StepTimePredictor
from cadence.sim.replica import Replica, SimEngine
from cadence.sim.router import Router

SAMPLED_TOKEN = 100  # any id that is not an end-of-sequence token; outputs run to their length
# Policies whose decision, with nothing waiting and only decodes running, is "every running request
# decodes one token" (see the module docstring); a new policy joins after its equivalence test passes.
DECODE_STATIONARY = frozenset({"sarathi", "vllm", "orca", "static"})


@dataclass(frozen=True)
class SimConfig:
    scheduler: SchedulerConfig
    num_replicas: int = 1
    pp: int = 1
    router: str = "round_robin"
    block_size: int = 16
    prefix_caching: bool = False  # synthetic prompts share nothing; on, prompts get distinct random ids
    exact_steps: bool = False


@dataclass
class SimResult:
    records: list[RequestRecord]
    requests: list[Request]
    replicas: list[Replica]
    end_time: float
    steps: int
    windows: int
    stopped: bool = False

    def check_conservation(self) -> None:
        for r in self.requests:
            if not r.is_finished or r.num_output_tokens != r.sampling_params.max_tokens:
                raise AssertionError(f"request {r.request_id} did not finish ({r.num_output_tokens} tokens)")
        for rep in self.replicas:
            for e in rep.engines:
                e.kv.check_all_free()


class Simulator:
    def __init__(self, config: SimConfig, predictor: StepTimePredictor, num_blocks: int, max_model_len: int) -> None:
        self.config, self.predictor = config, predictor
        self.replicas = [Replica(i, config.scheduler, num_blocks, config.block_size, max_model_len, predictor,
                                 config.pp, config.prefix_caching) for i in range(config.num_replicas)]
        self.router = Router(config.router)
        self.windows_on = not config.exact_steps and config.pp == 1 and config.scheduler.policy in DECODE_STATIONARY
        self._heap: list[tuple[float, int, SimEngine]] = []
        self._seq = 0
        self.steps = self.windows = 0
        self.assignment: dict[str, int] = {}  # request id -> replica index

    # -- requests ---------------------------------------------------------------------------------
    def _requests(self, specs: Sequence[RequestSpec]) -> list[Request]:
        if not specs:
            raise SimInputError("the workload has no requests (empty trace?)")
        rng = random.Random(0)
        limit = self.replicas[0].max_model_len
        out = []
        for s in sorted(specs, key=lambda s: (s.arrival_time, s.request_id)):
            if s.prompt_tokens < 1 or s.output_tokens < 1:
                raise SimInputError(f"request {s.request_id} has {s.prompt_tokens} prompt / {s.output_tokens} output tokens")
            if s.prompt_tokens + s.output_tokens > limit:
                raise SimInputError(f"request {s.request_id} needs {s.prompt_tokens + s.output_tokens} tokens of "
                                    f"context; a replica here holds at most {limit} (model context or KV cache)")
            if s.prompt_token_ids is not None:
                ids = list(s.prompt_token_ids)
            elif self.config.prefix_caching:
                ids = [rng.randrange(10, 30000) for _ in range(s.prompt_tokens)]
            else:
                ids = [1] * s.prompt_tokens
            params = SamplingParams(max_tokens=s.output_tokens, ignore_eos=True)
            # the engine sees a request after its way in from the client (a calibrated profile's term)
            out.append(Request(str(s.request_id), ids, params, arrival_time=s.arrival_time + self.predictor.request_in_s))
        return out

    # -- the loop ---------------------------------------------------------------------------------
    def _push(self, t: float, eng: SimEngine) -> None:
        self._seq += 1
        eng.pending = True
        heapq.heappush(self._heap, (t, self._seq, eng))

    def run(self, specs: Sequence[RequestSpec], late_limit: float | None = None) -> SimResult:
        """Simulate every request to its end. With `late_limit`, stop as soon as more than half of
        the requests are known to wait longer than that before being scheduled (the median
        scheduling delay then fails any SLO on it); unfinished requests are recorded as "stopped"."""
        reqs = self._requests(specs)
        self._late_limit = late_limit
        # The loop allocates millions of small acyclic objects; the cycle collector only slows it.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(reqs)
        finally:
            if was_enabled:
                gc.enable()

    def _run(self, reqs: list[Request]) -> SimResult:
        heap, replicas, router = self._heap, self.replicas, self.router
        end_bound = router.state_dependent and len(replicas) > 1
        i, n = 0, len(reqs)
        now = 0.0
        late_limit, late, q = self._late_limit, 0, 0
        stopped = False
        while i < n or heap:
            next_arrival = reqs[i].arrival_time if i < n else math.inf
            if not heap or next_arrival <= heap[0][0]:
                req = reqs[i]
                i += 1
                now = req.arrival_time
                if late_limit is not None:
                    while q < i:  # requests in arrival order whose lateness is settled
                        r = reqs[q]
                        t = r.first_scheduled_time
                        if t is None and now - r.arrival_time <= late_limit:
                            break
                        late += t is None or t - r.arrival_time > late_limit
                        q += 1
                    if 2 * late > n:
                        stopped = True
                        break
                k = router.pick(replicas) if len(replicas) > 1 else 0
                self.assignment[req.request_id] = k
                eng = replicas[k].add(req)
                if not eng.pending:
                    self._push(now, eng)
                continue
            now, _, eng = heapq.heappop(heap)
            eng.pending = False
            if eng.inflight is not None:
                self._complete(eng, now)
            nxt = reqs[i].arrival_time if i < n else math.inf
            self._start(eng, now, nxt, end_bound)
        records = [_record(r, self.predictor.request_in_s, self.predictor.request_out_s) for r in reqs]
        if stopped:
            records = [rec if r.is_finished else replace(rec, error="stopped", error_detail="over half the requests "
                       f"waited more than {late_limit} s to be scheduled") for r, rec in zip(reqs, records, strict=True)]
        return SimResult(records, reqs, replicas, now, self.steps, self.windows, stopped)

    def _complete(self, eng: SimEngine, now: float) -> None:
        out, eng.inflight = eng.inflight, None
        done = len(eng.scheduler.update_from_output(out, _SAMPLED, now))
        eng.outstanding -= done
        eng.replica.outstanding -= done

    def _start(self, eng: SimEngine, now: float, next_arrival: float, end_bound: bool) -> None:
        sch = eng.scheduler
        if not sch.has_unfinished():
            return
        if self.windows_on and not sch.waiting:
            end = self._decode_window(eng, now, next_arrival, end_bound)
            if end is not None:
                self._push(end, eng)
                return
        out = sch.schedule(now)
        if out.is_empty():
            raise SimInputError("the scheduler could schedule nothing on an idle replica (KV cache too small?)")
        tokens = sampled = dec = ctx = longest = 0
        prefills = []
        for s in out.scheduled:
            k = s.num_new_tokens
            tokens += k
            if k == 1:  # a decode (or a one-token recompute chunk, which costs the same)
                sampled += 1
                dec += 1
                c = s.num_computed_tokens + 1
                ctx += c
                if c > longest:
                    longest = c
                continue
            sampled += s.samples
            prefills.append((k, s.num_computed_tokens + k))
        rep = eng.replica
        if tokens > self.predictor.max_step_tokens:
            self.predictor.check_covers(max_step_tokens=tokens)
        st = self.predictor.step_time(tokens, sampled, len(out.scheduled), dec, ctx, prefills, longest)
        eng.inflight = out
        self.steps += 1
        self._push(rep.run_stages(now, st) if rep.pp > 1 else now + st, eng)

    def _decode_window(self, eng: SimEngine, now: float, next_arrival: float, end_bound: bool) -> float | None:
        running = eng.scheduler.running
        nrun = len(running)
        if nrun > self.config.scheduler.max_num_batched_tokens:
            return None
        kmax = 1 << 30
        ctx = longest = 0
        for r in running:
            c = r.num_computed_tokens
            if c != len(r.prompt_token_ids) + len(r.output_token_ids) - 1:
                return None  # a prefill or a recompute is under way
            rem = r.sampling_params.max_tokens - len(r.output_token_ids)
            if rem < kmax:
                kmax = rem
            ctx += c + 1
            if c >= longest:
                longest = c + 1
        if kmax < 2:
            return None
        base, slope = self.predictor.decode_window(nrun, ctx, longest)
        times = []
        t = now
        for j in range(kmax):
            if t >= next_arrival:
                break
            t += base + slope * j
            if end_bound and t > next_arrival:
                break
            times.append(t)
        k = _kv_fit(eng, len(times))
        if k < 2:
            return None
        times = times[:k]
        kv, sch = eng.kv, eng.scheduler
        toks = [SAMPLED_TOKEN] * k
        caching, bs, held = kv.enable_prefix_caching, kv.block_size, kv.req_blocks
        finished: dict = {}
        for r in running:
            r.append_tokens(toks, times)
            # allocate_slots changes nothing when no block is missing and no prefix cache is kept
            if (caching or -(-(r.num_computed_tokens + k) // bs) > len(held[r.request_id])) and \
                    not kv.allocate_slots(r, k):
                raise AssertionError("decode window outgrew the KV pool")  # _kv_fit proved it fits
            r.num_computed_tokens += k
            status = r.check_stop()
            if status is not None:
                finished.setdefault(status, []).append(r)
        end = times[-1]
        for status, reqs in finished.items():
            for r in reqs:
                r.finished_time = end
            sch.finish_requests([r.request_id for r in reqs], status)
            eng.outstanding -= len(reqs)
            eng.replica.outstanding -= len(reqs)
        self.steps += k
        self.windows += 1
        return end


class _AlwaysSampled(dict):
    """The sampled tokens of a step: update_from_output asks only for requests that sample, and
    every one of them gets SAMPLED_TOKEN (no dict to build per step)."""

    def get(self, key, default=None):  # noqa: ARG002
        return SAMPLED_TOKEN


_SAMPLED = _AlwaysSampled()


def _kv_fit(eng: SimEngine, k: int) -> int:
    """Largest k' <= k such that every running request can take k' more tokens without preemption."""
    kv = eng.kv
    bs, free, held = kv.block_size, kv.num_free_blocks, kv.req_blocks
    running = eng.scheduler.running

    def need(k: int) -> int:
        return sum(-(-(r.num_computed_tokens + k) // bs) - len(held[r.request_id]) for r in running)

    if k < 2 or need(k) <= free:
        return k
    lo, hi = 0, k  # need(lo) fits, need(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid) <= free else (lo, mid)
    return lo


def _record(r: Request, way_in: float = 0.0, way_out: float = 0.0) -> RequestRecord:
    """As the client sees it: sent `way_in` before the engine had it, each token `way_out` after
    the engine produced it."""
    sent = r.arrival_time - way_in
    return RequestRecord(
        request_id=r.request_id, arrival_time=sent, prompt_tokens=r.num_prompt_tokens,
        output_tokens=r.num_output_tokens,
        token_times=tuple(t + way_out for t in r.token_times) if way_out else tuple(r.token_times),
        target_output_tokens=r.sampling_params.max_tokens, first_scheduled_time=r.first_scheduled_time,
        send_time=sent, finish_time=None if r.finished_time is None else r.finished_time + way_out,
    )
