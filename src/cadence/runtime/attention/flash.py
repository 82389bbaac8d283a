"""PyTorch's own flash attention (varlen, with `seqused_k`), the kernel both GPU backends call."""

from __future__ import annotations

import torch


def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                 max_q: int, max_k: int, seqused_k: torch.Tensor, scale: float,
                 block_table: torch.Tensor | None = None) -> torch.Tensor:
    """q [T, Hq, D]; k, v [rows, Hkv, D] with any row stride (or [blocks, block, Hkv, D] with a
    block table). Request b's queries are q[cu_q[b]:cu_q[b+1]]; its keys start at row cu_k[b] and
    it uses seqused_k[b] of them. Causal, aligned to the end of each request's keys."""
    kwargs = {"scale": scale, "seqused_k": seqused_k}
    if block_table is not None:
        kwargs["block_table"] = block_table
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, True, False,
                                                   **kwargs)[0]


def has_flash_block_table() -> bool:
    return "block_table" in str(torch.ops.aten._flash_attention_forward.default._schema)
