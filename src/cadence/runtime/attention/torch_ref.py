"""The reference backend: a flat per-layer cache indexed by slot, gathered per request, and
PyTorch's scaled_dot_product_attention. Runs anywhere; the oracle for every other backend."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cadence.models.config import ModelConfig
from cadence.runtime.attention.base import AttentionBackend, StepAttention
from cadence.runtime.step_batch import StepBatch


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, **kwargs: int | None) -> None:
        super().__init__(config, num_blocks, block_size, dtype, device, **kwargs)
        shape = (config.num_layers, num_blocks * block_size, config.num_kv_heads, config.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.scale = config.head_dim**-0.5

    def release(self) -> None:
        self.k_cache = self.v_cache = torch.empty(0)

    def _slots(self, tables: list[list[int]], lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, max_len] cache slots of each request's tokens (padded with 0) and a validity mask."""
        bs = self.block_size
        max_len = max(lens)
        max_blocks = -(-max_len // bs)
        table = torch.zeros(len(tables), max_blocks, dtype=torch.long)
        for i, t in enumerate(tables):
            n = -(-lens[i] // bs)
            table[i, :n] = torch.tensor(t[:n], dtype=torch.long)
        pos = torch.arange(max_len)
        slots = table[:, pos // bs] * bs + pos % bs
        valid = pos[None, :] < torch.tensor(lens)[:, None]
        return slots.to(self.device), valid.to(self.device)

    def bind(self, batch: StepBatch) -> StepAttention:
        decode = [i for i, q in enumerate(batch.query_lens) if q == 1]
        starts = [0]
        for q in batch.query_lens:
            starts.append(starts[-1] + q)
        groups = []  # (token index tensor, gathered slots [B, L], mask [B, 1, Q, L])
        if decode:
            slots, valid = self._slots([batch.block_tables[i] for i in decode], [batch.context_lens[i] for i in decode])
            tok = torch.tensor([starts[i] for i in decode], device=self.device)
            groups.append((tok, slots, valid[:, None, None, :], 1))
        for i, q in enumerate(batch.query_lens):
            if q == 1:
                continue
            ctx = batch.context_lens[i]
            slots, _ = self._slots([batch.block_tables[i]], [ctx])
            key_pos = torch.arange(ctx, device=self.device)
            query_pos = torch.arange(ctx - q, ctx, device=self.device)
            mask = key_pos[None, :] <= query_pos[:, None]  # causal, offset by the cached context
            tok = torch.arange(starts[i], starts[i] + q, device=self.device)
            groups.append((tok, slots, mask[None, None], q))
        slot_mapping = batch.slot_mapping

        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k_cache, v_cache = self.k_cache[layer], self.v_cache[layer]
            k_cache.index_copy_(0, slot_mapping, k.to(k_cache.dtype))
            v_cache.index_copy_(0, slot_mapping, v.to(v_cache.dtype))
            out = torch.empty_like(q)
            for tok, slots, mask, qlen in groups:
                keys = k_cache[slots].transpose(1, 2)  # [B, Hkv, L, D]
                values = v_cache[slots].transpose(1, 2)
                if qlen == 1:
                    query = q[tok].unsqueeze(2)  # [B, Hq, 1, D]
                else:
                    query = q[tok].transpose(0, 1).unsqueeze(0)  # [1, Hq, Q, D]
                # float32 inside: the oracle should round once, where the output is stored
                o = F.scaled_dot_product_attention(query.float(), keys.float(), values.float(), attn_mask=mask,
                                                   scale=self.scale, enable_gqa=True).to(q.dtype)
                out[tok] = o.squeeze(2) if qlen == 1 else o[0].transpose(0, 1)
            return out

        return attn
