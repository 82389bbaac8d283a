"""Paged attention on the GPU: a block-indexed cache per layer, read through block tables.

With blocks of a multiple of 256 tokens (what PyTorch's flash kernel accepts with a block table)
the kernel reads the pages in place. With smaller blocks each layer first gathers the step's
context rows by block table into a packed buffer, then runs the same varlen flash kernel: more
bytes moved, the price of small blocks without a custom kernel. Kept for comparison and for
fine-grained prefix sharing; vattention is the fast path."""

from __future__ import annotations

import torch

from cadence.models.config import ModelConfig
from cadence.runtime.attention.base import AttentionBackend, StepAttention
from cadence.runtime.attention.flash import flash_varlen, has_flash_block_table
from cadence.runtime.step_batch import StepBatch


class PagedAttentionBackend(AttentionBackend):
    name = "paged"

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, **kwargs: int | None) -> None:
        super().__init__(config, num_blocks, block_size, dtype, device, **kwargs)
        if device.type != "cuda":
            raise ValueError("the paged backend runs on CUDA GPUs (use torch on CPU)")
        shape = (config.num_layers, num_blocks * block_size, config.num_kv_heads, config.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.scale = config.head_dim**-0.5
        self.in_place = block_size % 256 == 0 and has_flash_block_table()

    def release(self) -> None:
        self.k_cache = self.v_cache = torch.empty(0)

    def bind(self, batch: StepBatch) -> StepAttention:
        dev, bs = self.device, self.block_size
        ctx, qlens = batch.context_lens, batch.query_lens
        B = len(ctx)
        max_blocks = max(-(-c // bs) for c in ctx)
        table = torch.zeros(B, max_blocks, dtype=torch.int32)
        for i, t in enumerate(batch.block_tables):
            n = -(-ctx[i] // bs)
            table[i, :n] = torch.tensor(t[:n], dtype=torch.int32)
        meta = torch.zeros(3, B + 1, dtype=torch.int32)
        meta[0, 1:] = torch.tensor(qlens, dtype=torch.int32).cumsum(0)
        meta[1, 1:] = torch.tensor(ctx, dtype=torch.int32).cumsum(0)
        meta[2, :B] = torch.tensor(ctx, dtype=torch.int32)
        meta, table = meta.to(dev, non_blocking=True), table.to(dev, non_blocking=True)
        cu_q, cu_k, used = meta[0], meta[1], meta[2, :B]
        max_q, max_k = max(qlens), max(ctx)
        slot_mapping = batch.slot_mapping
        k_all, v_all, scale = self.k_cache, self.v_cache, self.scale
        if self.in_place:
            def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                kc, vc = k_all[layer], v_all[layer]
                kc.index_copy_(0, slot_mapping, k)
                vc.index_copy_(0, slot_mapping, v)
                shape = (self.num_blocks, bs, kc.shape[1], kc.shape[2])
                return flash_varlen(q, kc.view(shape), vc.view(shape), cu_q, cu_k, max_q, max_k, used, scale,
                                    block_table=table)
            return attn
        # rows of every request's context, packed: request of each row, its position, its cache slot
        total = sum(ctx)
        req = torch.repeat_interleave(torch.arange(B, device=dev), used.long(), output_size=total)
        pos = torch.arange(total, device=dev) - cu_k[:-1].long()[req]
        rows = table.long()[req, pos // bs] * bs + pos % bs

        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kc, vc = k_all[layer], v_all[layer]
            kc.index_copy_(0, slot_mapping, k)
            vc.index_copy_(0, slot_mapping, v)
            return flash_varlen(q, kc.index_select(0, rows), vc.index_select(0, rows), cu_q, cu_k, max_q, max_k,
                                used, scale)

        return attn
