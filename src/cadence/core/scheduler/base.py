"""The scheduler: one interface, one request life cycle; policies differ only in `schedule()`."""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Iterable

from cadence.core.config import SchedulerConfig
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request, RequestStatus
from cadence.core.scheduler.output import ScheduledRequest, SchedulerOutput


class Scheduler(abc.ABC):
    """Keeps the waiting queue and the running set, hands out tokens under the limits, and
    preempts by recompute (newest first) when KV blocks run out."""

    name = "base"

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, max_model_len: int) -> None:
        self.config = config
        self.kv = kv
        self.max_model_len = max_model_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0
        self._finished_ids: list[str] = []
        # async scheduling: requests whose last token (max_tokens) is in flight; they hold their blocks
        # until it lands, so that the blocks it completes can still be registered for prefix caching
        self._landing: list[Request] = []

    # -- life cycle -------------------------------------------------------------------------
    def add_request(self, req: Request) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        if req.num_prompt_tokens < 1:
            raise ValueError("the prompt is empty")
        if req.max_total_tokens > self.max_model_len:
            raise ValueError(
                f"prompt ({req.num_prompt_tokens} tokens) plus max_tokens ({req.sampling_params.max_tokens}) "
                f"is {req.max_total_tokens} tokens, beyond this model's context of {self.max_model_len}"
            )
        req.status = RequestStatus.WAITING
        self.requests[req.request_id] = req
        self.waiting.append(req)

    def finish_requests(self, request_ids: Iterable[str], status: RequestStatus) -> list[Request]:
        """End requests from outside the step (abort, stop string): frees their blocks now."""
        done = []
        for rid in request_ids:
            req = self.requests.get(rid)
            if req is None or req.is_finished:
                continue
            self._end(req, status)
            req.drop_placeholders()  # tokens in flight are not part of an ended request's output
            done.append(req)
        return done

    def _end(self, req: Request, status: RequestStatus) -> None:
        """Take an unfinished request out of the running set or the waiting queue and finish it."""
        if req.status == RequestStatus.RUNNING:
            (self._landing if req in self._landing else self.running).remove(req)
        else:
            self.waiting.remove(req)
        self._finish(req, status)

    def abort(self, request_ids: Iterable[str]) -> list[Request]:
        return self.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED)


    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def _finish(self, req: Request, status: RequestStatus) -> None:
        req.status = status
        self.kv.free(req)
        del self.requests[req.request_id]
        self._finished_ids.append(req.request_id)

    # -- one step ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _schedule(self, out: SchedulerOutput) -> None:
        """Fill `out.scheduled` (the policy)."""

    def schedule(self, now: float = 0.0) -> SchedulerOutput:
        out = SchedulerOutput(finished_ids=self._finished_ids)
        self._finished_ids = []
        self._scheduled_ids: set[str] = set()
        self._schedule(out)
        for s in out.scheduled:
            if s.request.first_scheduled_time is None:
                s.request.first_scheduled_time = now
        return out

    def update_from_output(self, out: SchedulerOutput, sampled: dict[str, int], now: float) -> list[Request]:
        """Advance every scheduled request; append the tokens sampled for those that caught up.
        Returns the requests that finished in this step."""
        finished = []
        aborted = RequestStatus.FINISHED_ABORTED
        for s in out.scheduled:
            req = s.request
            if req.status is aborted:  # ended while the step ran (the only way out mid-step)
                continue
            computed = req.num_computed_tokens = s.num_computed_tokens + s.num_new_tokens
            if computed != req.num_tokens:  # a prefill chunk: nothing to sample yet
                continue
            token = sampled.get(req.request_id)
            if token is None:
                continue
            req.append_token(token, now)
            status = req.check_stop()
            if status is not None:
                self.running.remove(req)
                req.finished_time = now
                self._finish(req, status)
                finished.append(req)
        return finished

    # -- the same update in two halves, for an engine that plans a step while the last one runs --
    def advance(self, out: SchedulerOutput, now: float) -> list[Request]:
        """Right after step `out` is launched, before its tokens are known: advance every scheduled
        request and give each one that samples a placeholder token, so that the next schedule()
        plans its next decode. A request whose placeholder is its last allowed token (max_tokens)
        leaves the running set now (it is never scheduled again) and finishes when that token
        lands in resolve(). Returns the requests that sample in this step, for resolve()."""
        sampling = []
        aborted = RequestStatus.FINISHED_ABORTED
        for s in out.scheduled:
            req = s.request
            if req.status is aborted:
                continue
            computed = req.num_computed_tokens = s.num_computed_tokens + s.num_new_tokens
            if computed != req.num_tokens:  # a prefill chunk: nothing to sample yet
                continue
            req.append_placeholder()
            sampling.append(req)
            if req.num_output_tokens >= req.sampling_params.max_tokens:
                self.running.remove(req)
                self._landing.append(req)
        return sampling

    def resolve(self, sampling: list[Request], sampled: dict[str, int], now: float) -> list[tuple[Request, int]]:
        """The tokens of an advanced step came back: fill each request's oldest placeholder and apply
        the token-level stop rules to it (ending the request and dropping any newer placeholder).
        Returns the (request, token) pairs that became output; a request that ended before (abort,
        an earlier stop) gets none."""
        accepted = []
        for req in sampling:
            if req.num_placeholders == 0 or req.status is RequestStatus.FINISHED_ABORTED:
                continue  # ended meanwhile: its placeholders were dropped
            token = sampled[req.request_id]
            status = req.stop_status_at(req.resolve_placeholder(token, now))
            accepted.append((req, token))
            if status is None:
                continue
            req.drop_placeholders()
            req.finished_time = now
            if req in self._landing:
                self.kv.register_known_blocks(req)  # before its blocks are freed
            self._end(req, status)
        return accepted

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self._landing)

    # -- building blocks for policies -------------------------------------------------------
    def _remaining(self, req: Request) -> int:
        return req.num_tokens - req.num_computed_tokens

    def _schedule_running(self, req: Request, num_tokens: int, out: SchedulerOutput) -> bool:
        """Give a running request `num_tokens`, preempting the newest unscheduled running requests
        (possibly itself) until its blocks fit."""
        while not self.kv.allocate_slots(req, num_tokens):
            victim = self._pick_victim()
            self._preempt(victim, out)
            if victim is req:
                return False
        out.scheduled.append(ScheduledRequest(req, num_tokens, req.num_computed_tokens))
        self._scheduled_ids.add(req.request_id)
        return True

    def _pick_victim(self) -> Request:
        for req in reversed(self.running):
            if req.request_id not in self._scheduled_ids:
                return req
        raise RuntimeError("KV cache too small for the running batch")  # cannot happen: the requester is unscheduled

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        self.running.remove(req)
        self.kv.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)
        out.preempted.append(req)

    def _try_admit(self, req: Request, out: SchedulerOutput, budget: int | None, *, partial: bool) -> int:
        """Admit the head of the waiting queue. Its tokens past any prefix-cache hit are cut to
        `budget` if `partial`, else it must fit whole (None: no limit). Returns the tokens
        scheduled, 0 if it does not fit (admissions never preempt)."""
        if req.num_placeholders:  # preempted with a token in flight: recompute once it is known
            return 0
        cached, num_cached = self.kv.get_computed_blocks(req)
        n = req.num_tokens - num_cached
        if budget is not None and n > budget:
            if not partial or budget <= 0:
                return 0
            n = budget
        if not self.kv.allocate_slots(req, n, cached):
            return 0
        self.kv.record_prefix_lookup(req.num_tokens, num_cached)
        self.waiting.popleft()
        if req.num_preemptions == 0:
            req.num_cached_prompt_tokens = num_cached
        req.num_computed_tokens = num_cached
        req.status = RequestStatus.RUNNING
        self.running.append(req)
        out.scheduled.append(ScheduledRequest(req, n, num_cached))
        self._scheduled_ids.add(req.request_id)
        return n

    def _admit_whole_prefills(self, budget: int, out: SchedulerOutput) -> int:
        """Admit waiting requests with their whole remaining prefill while `budget` lasts; the
        first one runs even if longer than the budget, so that no prompt starves."""
        used = 0
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            n = self._try_admit(self.waiting[0], out, None if used == 0 else budget - used, partial=False)
            if n == 0:
                break
            used += n
        return used
