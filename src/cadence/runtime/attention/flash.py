"""PyTorch's own flash attention (varlen, with `seqused_k`), the kernel both GPU backends call."""

from __future__ import annotations

from collections.abc import Callable

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


# Below this many (request, KV head) tiles a decode batch leaves most of an H100's 132 SMs idle if
# each tile walks its whole context, which is what packing does; one query row per request instead
# lets the kernel take its own split-KV route for single-token queries (grouped heads swapped into
# rows, the context split across blocks, merged inside the kernel). Measured on the H100
# (decode_attention_h100.json): packed 3-13x slower at 1-8 requests of 3k-25k tokens, 0-6 % faster
# from 32 requests x 8 KV heads up.
PACKED_MIN_TILES = 256


def packs_query_heads(rows: int, heads: int, kv_heads: int) -> bool:
    """Whether a decode batch of `rows` requests takes grouped-query packing (`flash_decode`)."""
    return heads > kv_heads and rows * kv_heads >= PACKED_MIN_TILES


DecodeKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def decode_kernel(rows: int, heads: int, kv_heads: int, scale: float, device: torch.device) -> DecodeKernel:
    """Decode attention for batches of `rows` requests (one query token each): a callable
    (q [rows, heads, D], k, v, cu_k, seqused_k, max_k) -> [rows, heads, D], keys as in
    `flash_varlen`. Static per row count, so a CUDA graph can capture it."""
    if packs_query_heads(rows, heads, kv_heads):
        cu_q = packed_cu_q(rows, heads // kv_heads, device)
        return lambda q, k, v, cu_k, used, max_k: flash_decode(q, k, v, cu_q, cu_k, max_k, used, scale)
    cu_1 = torch.arange(rows + 1, dtype=torch.int32, device=device)
    return lambda q, k, v, cu_k, used, max_k: flash_varlen(q, k, v, cu_1, cu_k, 1, max_k, used, scale)


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
