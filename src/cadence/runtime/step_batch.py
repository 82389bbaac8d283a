"""The tensors of one step, built from the scheduler's output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.scheduler.output import SchedulerOutput


@dataclass
class StepBatch:
    input_ids: torch.Tensor  # [T] every scheduled token of every request, request after request
    positions: torch.Tensor  # [T]
    slot_mapping: torch.Tensor  # [T] where each token's K/V goes in the flat cache
    query_lens: list[int]
    context_lens: list[int]  # tokens in the cache after this step, per request
    block_tables: list[list[int]]
    sample_indices: torch.Tensor  # [N] position in the flattened step of each sampled token
    sample_requests: list[Request]
    block_size: int

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def is_decode_only(self) -> bool:
        return all(q == 1 for q in self.query_lens)


def build_step_batch(out: SchedulerOutput, kv: KVCacheManager, device: torch.device) -> StepBatch:
    bs = kv.block_size
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    query_lens, context_lens, tables = [], [], []
    sample_idx: list[int] = []
    sample_reqs: list[Request] = []
    for s in out.scheduled:
        req, start, n = s.request, s.num_computed_tokens, s.num_new_tokens
        end = start + n
        table = kv.block_ids(req.request_id)
        ids.extend(req.token_slice(start, end))
        pos.extend(range(start, end))
        slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
        query_lens.append(n)
        context_lens.append(end)
        tables.append(table)
        if s.samples:
            sample_idx.append(len(ids) - 1)
            sample_reqs.append(req)

    def t(xs: list[int]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.long).to(device, non_blocking=True)

    return StepBatch(t(ids), t(pos), t(slots), query_lens, context_lens, tables, t(sample_idx), sample_reqs, bs)
