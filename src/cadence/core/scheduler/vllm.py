"""Prefill-prioritizing batching, as in vLLM before chunked prefills (Kwon et al., SOSP 2023)."""

from __future__ import annotations

from cadence.core.request import RequestStatus
from cadence.core.scheduler.base import Scheduler
from cadence.core.scheduler.output import SchedulerOutput


class VLLMScheduler(Scheduler):
    """Whenever requests wait and fit, a batch of whole prefills runs alone; otherwise every running
    request decodes. Prefills and decodes never share a step, so decodes stall behind prompts."""

    name = "vllm"

    def _schedule(self, out: SchedulerOutput) -> None:
        if self._admit_whole_prefills(self.config.max_num_batched_tokens, out):
            return
        for req in list(self.running):
            if req.status is RequestStatus.RUNNING:
                self._schedule_running(req, self._remaining(req), out)
