"""A request's state as the scheduler and the KV accounting see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cadence.core.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_ABORTED})

# An output token that is being sampled on the device and not yet known on the host (the engine's
# async scheduling plans the next step before the current one's tokens come back).
PLACEHOLDER = -1


@dataclass(eq=False)
class Request:
    """One sequence. `num_computed_tokens` catches up with `num_tokens` step by step: a whole
    prefill, a chunk, a decode, a prefix hit and a recompute after preemption are the same move."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float = 0.0
    eos_token_ids: frozenset[int] = frozenset()
    output_token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prefix-cache hit at first admission, for reporting
    num_preemptions: int = 0
    # Timeline, in the clock of whoever drives the core (wall clock or simulated).
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    finished_time: float | None = None
    stop_reason: int | str | None = None
    # Chained block hashes of the full blocks of this request's tokens (prefix caching).
    block_hashes: list[int] = field(default_factory=list)
    # len(prompt) + len(output), kept as a field: the scheduler reads it for every request every step.
    num_tokens: int = field(init=False)
    # trailing output tokens that are PLACEHOLDERs (async scheduling; always 0 otherwise)
    num_placeholders: int = 0

    def __post_init__(self) -> None:
        self.num_tokens = len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def max_total_tokens(self) -> int:
        return len(self.prompt_token_ids) + self.sampling_params.max_tokens

    @property
    def is_finished(self) -> bool:
        return self.status.finished

    @property
    def is_prefill(self) -> bool:
        """Still computing tokens it already knows (prompt, or recompute after preemption)."""
        return self.num_computed_tokens < self.num_tokens - 1

    def token_id(self, i: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[i] if i < n else self.output_token_ids[i - n]

    def token_slice(self, start: int, end: int) -> list[int]:
        n = len(self.prompt_token_ids)
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]

    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def known_token_ids(self) -> list[int]:
        """All tokens but the trailing placeholders."""
        if not self.num_placeholders:
            return self.prompt_token_ids + self.output_token_ids
        return self.prompt_token_ids + self.output_token_ids[:-self.num_placeholders]

    @property
    def num_known_output_tokens(self) -> int:
        return len(self.output_token_ids) - self.num_placeholders

    def append_placeholder(self) -> None:
        """A token is being sampled: it counts (position, length limits) before its value is known."""
        self.output_token_ids.append(PLACEHOLDER)
        self.num_tokens += 1
        self.num_placeholders += 1

    def resolve_placeholder(self, token_id: int, now: float) -> int:
        """The oldest placeholder's value came back; returns its index in the output."""
        i = len(self.output_token_ids) - self.num_placeholders
        self.output_token_ids[i] = token_id
        self.num_placeholders -= 1
        if self.first_token_time is None:
            self.first_token_time = now
        self.token_times.append(now)
        return i

    def drop_placeholders(self) -> None:
        """The request ended with tokens still in flight: they will never be part of its output."""
        if self.num_placeholders:
            del self.output_token_ids[-self.num_placeholders:]
            self.num_tokens -= self.num_placeholders
            self.num_placeholders = 0

    def append_token(self, token_id: int, now: float) -> None:
        self.output_token_ids.append(token_id)
        self.num_tokens += 1
        if self.first_token_time is None:
            self.first_token_time = now
        self.token_times.append(now)

    def append_tokens(self, token_ids: list[int], times: list[float]) -> None:
        """Several tokens at once (the simulator's decode windows)."""
        self.output_token_ids.extend(token_ids)
        self.num_tokens += len(token_ids)
        if self.first_token_time is None and times:
            self.first_token_time = times[0]
        self.token_times.extend(times)

    def check_stop(self) -> RequestStatus | None:
        """Token-level stop rules (stop strings are checked by the detokenizer, which knows text)."""
        return self.stop_status_at(len(self.output_token_ids) - 1)

    def stop_status_at(self, i: int) -> RequestStatus | None:
        """The token-level stop rules applied to output token `i` as the last one."""
        params = self.sampling_params
        n_out = i + 1
        if n_out <= 0:
            return None
        last = self.output_token_ids[i]
        if n_out >= params.min_tokens:
            if not params.ignore_eos and last in self.eos_token_ids:
                self.stop_reason = last
                return RequestStatus.FINISHED_STOPPED
            if last in params.stop_token_ids:
                self.stop_reason = last
                return RequestStatus.FINISHED_STOPPED
        if n_out >= params.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        return None
