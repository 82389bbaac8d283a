"""PyTorch's own flash attention (varlen, with `seqused_k`), the kernel both GPU backends call for
prefills (and, with `--decode-kernel flash`, for decodes: see decode.py)."""

from __future__ import annotations

import torch


def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                 max_q: int, max_k: int, seqused_k: torch.Tensor, scale: float,
                 block_table: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
    """q [T, Hq, D]; k, v [rows, Hkv, D] with any row stride (or [blocks, block, Hkv, D] with a
    block table). Request b's queries are q[cu_q[b]:cu_q[b+1]]; its keys start at row cu_k[b] and
    it uses seqused_k[b] of them. Causal, aligned to the end of each request's keys."""
    kwargs = {"scale": scale, "seqused_k": seqused_k}
    if block_table is not None:
        kwargs["block_table"] = block_table
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False,
                                                   **kwargs)[0]


def packed_cu_q(max_batch: int, group: int, device: torch.device) -> torch.Tensor:
    """cu_seqlens_q of a decode batch whose query heads are packed `group` rows a request."""
    return torch.arange(0, (max_batch + 1) * group, group, dtype=torch.int32, device=device)


def flash_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q_packed: torch.Tensor,
                 cu_k: torch.Tensor, max_k: int, seqused_k: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token a request (q [B, Hq, D]), keys as in `flash_varlen`.

    Grouped-query attention packed into the query-row dimension: the G = Hq / Hkv query heads that
    share a KV head become G query rows of one sequence over that KV head, non-causal (a decode
    token sees its whole context). The kernel then runs one tile per (request, KV head) instead of
    one per (request, query head): it reads each KV head once, and its 64/128-row query tile holds
    G useful rows instead of one. Same result, same kernel, G times fewer tiles.
    `cu_q_packed` is `packed_cu_q(...)[:B + 1]`."""
    B, Hq, D = q.shape
    Hkv = k.shape[-2]
    G = Hq // Hkv
    if G == 1:
        return flash_varlen(q, k, v, cu_q_packed, cu_k, 1, max_k, seqused_k, scale, causal=False)
    qp = q.view(B, Hkv, G, D).transpose(1, 2).reshape(B * G, Hkv, D)
    out = flash_varlen(qp, k, v, cu_q_packed, cu_k, G, max_k, seqused_k, scale, causal=False)
    return out.view(B, G, Hkv, D).transpose(1, 2).reshape(B, Hq, D)


def has_flash_block_table() -> bool:
    return "block_table" in str(torch.ops.aten._flash_attention_forward.default._schema)
