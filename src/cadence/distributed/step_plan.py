"""What the driver sends each tensor-parallel worker every step: the step's inputs as plain ints
(no Request objects, no scheduler state), from which every rank builds the same StepBatch."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.scheduler.output import SchedulerOutput
from cadence.runtime.step_batch import StepBatch


@dataclass
class StepPlan:
    gone: list[str]  # requests that ended or were preempted: free their per-request state
    tokens: array = field(default_factory=lambda: array("q"))  # token ids, then positions
    query_lens: list[int] = field(default_factory=list)
    context_lens: list[int] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    known_lens: list[int] = field(default_factory=list)
    sample_indices: list[int] = field(default_factory=list)
    block_tables: list[list[int]] = field(default_factory=list)
    block_size: int = 16

    @property
    def is_empty(self) -> bool:
        return not self.query_lens

    @classmethod
    def build(cls, out: SchedulerOutput, kv: KVCacheManager, gone: list[str]) -> StepPlan:
        plan = cls(gone, block_size=kv.block_size)
        ids, pos = array("q"), array("q")
        for s in out.scheduled:
            req, start, n = s.request, s.num_computed_tokens, s.num_new_tokens
            ids.extend(req.token_slice(start, start + n))
            pos.extend(range(start, start + n))
            plan.query_lens.append(n)
            plan.context_lens.append(start + n)
            plan.request_ids.append(req.request_id)
            plan.known_lens.append(req.num_tokens)
            plan.block_tables.append(kv.block_ids(req.request_id))
            if s.samples:
                plan.sample_indices.append(len(ids) - 1)
        ids.extend(pos)
        plan.tokens = ids
        return plan

    def to_batch(self, device: torch.device, sample_requests: list[Request] | None = None,
                 kv: KVCacheManager | None = None) -> StepBatch:
        both = torch.frombuffer(bytearray(self.tokens), dtype=torch.long).view(2, -1).to(device, non_blocking=True)
        return StepBatch(both[0], both[1], self.query_lens, self.context_lens,
                         torch.tensor(self.sample_indices, dtype=torch.long).to(device, non_blocking=True),
                         sample_requests or [], self.block_size, self.request_ids, self.known_lens, device, kv,
                         _block_tables=self.block_tables)
