"""The tensors of one step, built from the scheduler's output."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.scheduler.output import SchedulerOutput


@dataclass
class StepBatch:
    input_ids: torch.Tensor  # [T] every scheduled token of every request, request after request
    positions: torch.Tensor  # [T]
    query_lens: list[int]
    context_lens: list[int]  # tokens in the cache after this step, per request
    sample_indices: torch.Tensor  # [N] position in the flattened step of each sampled token
    sample_requests: list[Request]
    block_size: int
    request_ids: list[str] = field(default_factory=list)
    known_lens: list[int] = field(default_factory=list)  # tokens each request knows (prompt + output)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    kv: KVCacheManager | None = None
    _slot_mapping: torch.Tensor | None = None
    _block_tables: list[list[int]] | None = None

    @property
    def block_tables(self) -> list[list[int]]:
        """Block ids of each request (built on first use: a list per request per step costs)."""
        if self._block_tables is None:
            assert self.kv is not None
            self._block_tables = [self.kv.block_ids(rid) for rid in self.request_ids]
        return self._block_tables

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def is_decode_only(self) -> bool:
        return all(q == 1 for q in self.query_lens)

    @property
    def start_lens(self) -> list[int]:
        """Tokens already in the cache before this step, per request."""
        return [c - q for c, q in zip(self.context_lens, self.query_lens, strict=True)]

    @property
    def slot_mapping(self) -> torch.Tensor:
        """[T] where each token's K/V goes in a flat block-indexed cache (built on first use: the
        vattention backend never needs it, and it costs a Python loop over every token)."""
        if self._slot_mapping is None:
            bs = self.block_size
            slots: list[int] = []
            for table, ctx, q in zip(self.block_tables, self.context_lens, self.query_lens, strict=True):
                slots.extend(table[p // bs] * bs + p % bs for p in range(ctx - q, ctx))
            self._slot_mapping = torch.tensor(slots, dtype=torch.long).to(self.device, non_blocking=True)
        return self._slot_mapping


@dataclass
class InFlightTokens:
    """The tokens a launched step samples, still on the device: row `rows[request id]` of `tokens`."""

    tokens: torch.Tensor
    rows: dict[str, int]


def build_step_batch(out: SchedulerOutput, kv: KVCacheManager, device: torch.device,
                     in_flight: InFlightTokens | None = None) -> StepBatch:
    """`in_flight`: the previous step's sampled tokens, for decodes whose input token is still a
    placeholder on the host (async scheduling); they are copied in on the device."""
    ids: list[int] = []
    pos: list[int] = []
    query_lens, context_lens, rids, known = [], [], [], []
    sample_idx: list[int] = []
    sample_reqs: list[Request] = []
    patch_dst: list[int] = []
    patch_src: list[int] = []
    for s in out.scheduled:
        req, start, n = s.request, s.num_computed_tokens, s.num_new_tokens
        end = start + n
        if n == 1:
            tok = req.token_id(start)
            if tok < 0:  # PLACEHOLDER: sampled by the step in flight
                assert in_flight is not None, f"{req.request_id}'s input token is not known"
                patch_dst.append(len(ids))
                patch_src.append(in_flight.rows[req.request_id])
                tok = 0
            ids.append(tok)
            pos.append(start)
        else:
            ids.extend(req.token_slice(start, end))
            pos.extend(range(start, end))
        query_lens.append(n)
        context_lens.append(end)
        rids.append(req.request_id)
        known.append(req.num_tokens)
        if s.samples:
            sample_idx.append(len(ids) - 1)
            sample_reqs.append(req)
    # one host-to-device copy for ids and positions together
    both = torch.tensor([ids, pos], dtype=torch.long).to(device, non_blocking=True)
    if patch_dst:
        assert in_flight is not None
        idx = torch.tensor([patch_dst, patch_src], dtype=torch.long).to(device, non_blocking=True)
        both[0].index_copy_(0, idx[0], in_flight.tokens.index_select(0, idx[1]))
    return StepBatch(both[0], both[1], query_lens, context_lens,
                     torch.tensor(sample_idx, dtype=torch.long).to(device, non_blocking=True), sample_reqs,
                     kv.block_size, rids, known, device, kv)
