"""Sarathi-Serve: stall-free batching under a token budget (Agrawal et al., OSDI 2024)."""

from __future__ import annotations

from cadence.core.request import RequestStatus
from cadence.core.scheduler.base import Scheduler
from cadence.core.scheduler.output import SchedulerOutput


class SarathiScheduler(Scheduler):
    """Running decodes first (never stalled by a prefill), then ongoing partial prefills, then new
    prefills; each prefill chunk is cut to what is left of the token budget."""

    name = "sarathi"

    def _schedule(self, out: SchedulerOutput) -> None:
        budget = self.config.max_num_batched_tokens
        decodes, prefills = [], []
        for r in self.running:  # one pass: this runs for every request at every step
            (prefills if r.num_computed_tokens < r.num_tokens - 1 else decodes).append(r)
        for req in decodes:
            if budget <= 0:
                break
            if req.status is RequestStatus.RUNNING and self._schedule_running(req, 1, out):
                budget -= 1
        for req in prefills:
            if budget <= 0:
                break
            if req.status is not RequestStatus.RUNNING:  # preempted above
                continue
            n = min(self._remaining(req), budget)
            if self._schedule_running(req, n, out):
                budget -= n
        # At most one decode per budget token may run, so that no running decode is ever skipped.
        max_running = min(self.config.max_num_seqs, self.config.max_num_batched_tokens)
        while budget > 0 and self.waiting and len(self.running) < max_running:
            n = self._try_admit(self.waiting[0], out, budget, partial=True)
            if n == 0:
                break
            budget -= n
