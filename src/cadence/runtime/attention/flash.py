"""PyTorch's own flash attention (varlen, with `seqused_k`), the kernel both GPU backends call."""

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


def flash_varlen_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                     max_q: int, max_k: int, seqused_k: torch.Tensor, scale: float,
                     causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`flash_varlen` that also returns each query row's log-sum-exp of scores, as [T, Hq] float."""
    # The log-sum-exp is always the second output; the flag after `causal` asks for the debug
    # attention mask, which the kernel refuses without dropout.
    res = torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False,
                                                  scale=scale, seqused_k=seqused_k)
    out, lse = res[0], res[1]
    if lse.dim() == 3:  # padded [batch, heads, max_q] (max_q == 1 for decodes)
        lse = lse[:, :, 0]
    else:  # unpadded [heads, total_q]
        lse = lse.t()
    return out, lse


def split_kv_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_k: torch.Tensor,
                    seqused_k: torch.Tensor, max_k: int, scale: float, splits: int,
                    cu_q_split: torch.Tensor) -> torch.Tensor:
    """Decode attention with each request's context cut into `splits` parts, all parts rows of one
    flash call, merged by log-sum-exp (flash-decoding, with PyTorch's own kernel doing every part).
    A few requests with long contexts otherwise give the kernel one thread block per (request,
    head) walking the whole context while most of the GPU idles. q [B, Hq, D]; keys as in
    `flash_varlen` (request b's start at row cu_k[b], seqused_k[b] of them, cu_k[B] past the last
    one); `cu_q_split` is arange(B * splits + 1). Device-only work: capturable in a CUDA graph."""
    B, Hq, D = q.shape
    S = splits
    ctx = seqused_k[:B].long()
    cuts = torch.arange(S + 1, device=q.device)
    bounds = (ctx[:, None] * cuts[None, :]) // S  # [B, S+1]: part s is [bounds[s], bounds[s+1])
    lens = (bounds[:, 1:] - bounds[:, :-1]).flatten()
    starts = torch.empty(B * S + 1, dtype=torch.int32, device=q.device)
    starts[:-1] = (cu_k[:B].long()[:, None] + bounds[:, :-1]).flatten()
    starts[-1] = cu_k[B]
    qs = q.repeat_interleave(S, dim=0)  # request-major: request b's parts are rows b*S .. b*S+S-1
    out, lse = flash_varlen_lse(qs, k, v, cu_q_split, starts, 1, -(-max_k // S) + 1, lens.int(), scale)
    lse = lse.float().masked_fill((lens == 0)[:, None], float("-inf")).view(B, S, Hq)  # empty parts
    w = torch.softmax(lse, dim=1)  # each part's share of the request's softmax mass
    return (out.view(B, S, Hq, D).float() * w[..., None]).sum(dim=1).to(q.dtype)


def decode_splits(batch: int, heads: int, max_splits: int = 16, target_blocks: int = 264) -> int:
    """Parts per context so that a decode batch gives the kernel about `target_blocks` thread blocks
    (two per SM of an H100): 1 once batch x heads reaches it."""
    need = -(-target_blocks // max(batch * heads, 1))
    s = 1
    while s < need and s < max_splits:
        s *= 2
    return s


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
