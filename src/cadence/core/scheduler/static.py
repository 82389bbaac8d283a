"""Request-level (static) batching: a batch runs to completion before the next is admitted."""

from __future__ import annotations

from cadence.core.request import RequestStatus
from cadence.core.scheduler.base import Scheduler
from cadence.core.scheduler.output import SchedulerOutput


class StaticScheduler(Scheduler):
    """Admits a batch of whole prefills only when nothing is running, then decodes that batch until
    its last request finishes, as FasterTransformer-style servers do."""

    name = "static"

    def _schedule(self, out: SchedulerOutput) -> None:
        if not self.running:
            self._admit_whole_prefills(self.config.max_num_batched_tokens, out)
            return
        for req in list(self.running):
            if req.status is RequestStatus.RUNNING:
                self._schedule_running(req, self._remaining(req), out)
