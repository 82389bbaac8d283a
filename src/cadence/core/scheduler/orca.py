"""Iteration-level batching that mixes whole prefills with decodes (Orca, Yu et al., OSDI 2022)."""

from __future__ import annotations

from cadence.core.request import RequestStatus
from cadence.core.scheduler.base import Scheduler
from cadence.core.scheduler.output import SchedulerOutput


class OrcaScheduler(Scheduler):
    """Every running request decodes each step, and waiting requests join with their whole prompt
    while the token budget lasts (the first joins whatever its length: prompts are never split)."""

    name = "orca"

    def _schedule(self, out: SchedulerOutput) -> None:
        for req in list(self.running):
            if req.status is RequestStatus.RUNNING:
                self._schedule_running(req, self._remaining(req), out)
        budget = self.config.max_num_batched_tokens - out.num_batched_tokens
        self._admit_whole_prefills(max(budget, 0), out)
