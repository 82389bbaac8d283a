"""What one step computes: the scheduler's answer, read by the model runner (or the simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cadence.core.request import Request


@dataclass
class ScheduledRequest:
    request: Request
    num_new_tokens: int
    num_computed_tokens: int  # before this step

    @property
    def samples(self) -> bool:
        """True when this step catches the request up with all its known tokens, so the last
        position's logits give its next token."""
        return self.num_computed_tokens + self.num_new_tokens == self.request.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    finished_ids: list[str] = field(default_factory=list)  # ended since the last step (abort, stop string)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def num_prefill_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled if s.num_new_tokens > 1 or not s.samples)

    @property
    def num_decodes(self) -> int:
        return sum(1 for s in self.scheduled if s.num_new_tokens == 1 and s.samples)

    def is_empty(self) -> bool:
        return not self.scheduled
