"""Decode attention in Triton over vattention's strided rows: one query token a request, grouped
query heads of a KV head in one program, the context walked once per (request, KV head).

Why not PyTorch's flash kernel for large decode batches: with one query token a request, its
smallest query tile is 64-128 rows, of which grouped-query packing fills G (4 for llama3-8b, 2 for
qwen3-0.6b); the tile's matrix work on empty rows, not memory, then bounds it. Measured on an H200
(profile_decode.py, llama3-8b, 256 requests of ~858 tokens): 396 us a layer, 2.3 TB/s of K/V against
a 4.3 TB/s copy ceiling, the same time as on an H100 (3.0 TB/s): it does not move with bandwidth.
Here a program holds its G query rows in a 16-row tile (the smallest matrix-instruction tile) and
streams the context through shared memory in BLOCK_N-token tiles, so the kernel is bound by reading
K and V. Like flash, it knows nothing of pages: keys are rows `start[b] .. start[b] + used[b]` of a
[rows, Hkv, D] view with any row stride.

Long contexts over few programs (small batches) split the context in SPLITS parts, each a program,
merged by their log-sum-exp in a second launch. Shapes are static per (batch, splits), and the
context lengths are read on the device, so a CUDA graph can capture it."""

from __future__ import annotations

import torch

from cadence.runtime.kernels import HAVE_TRITON

if HAVE_TRITON:
    import triton
    import triton.language as tl

LOG2E = 1.4426950408889634
MIN_ROWS = 16  # the smallest tile tl.dot takes in its row dimension
# Tile and launch settings, the fastest of 18 (tokens a tile 32/64/128 x warps 4/8 x stages 2/3/4) or
# within 1 % of it at 64-256 requests for both shapes on the H200 (results/triton_decode_h200.json).
BLOCK_N, NUM_WARPS, NUM_STAGES = 64, 4, 3


def available(device: torch.device) -> bool:
    return HAVE_TRITON and device.type == "cuda"


if HAVE_TRITON:

    @triton.jit
    def _decode_kernel(q_ptr, k_ptr, v_ptr, o_ptr, part_ptr, lse_ptr, start_ptr, used_ptr, qk_scale,
                       q_sb, q_sh, k_st, k_sh, v_st, v_sh, o_sb, o_sh,
                       G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                       SPLITS: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        split = tl.program_id(2)
        n = tl.load(used_ptr + b)
        start = tl.load(start_ptr + b).to(tl.int64)
        if SPLITS == 1:
            lo, hi = 0, n
        else:  # this split's share of the context, in whole tiles
            per = tl.cdiv(tl.cdiv(n, SPLITS), BLOCK_N) * BLOCK_N
            lo = split * per
            hi = tl.minimum(lo + per, n)
        g = tl.arange(0, GP)
        d = tl.arange(0, D)
        rows = h * G + g
        live = (g < G)[:, None]
        q = tl.load(q_ptr + b * q_sb + rows[:, None] * q_sh + d[None, :], mask=live, other=0.0)
        m_i = tl.full([GP], float("-inf"), tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        k_base = k_ptr + start * k_st + h * k_sh
        v_base = v_ptr + start * v_st + h * v_sh
        for s in range(lo, hi, BLOCK_N):
            offs = s + tl.arange(0, BLOCK_N)
            inside = offs < hi
            tok = offs.to(tl.int64)
            k = tl.load(k_base + tok[:, None] * k_st + d[None, :], mask=inside[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * qk_scale  # log2 domain
            scores = tl.where(inside[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            p = tl.math.exp2(scores - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + tok[:, None] * v_st + d[None, :], mask=inside[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        if SPLITS == 1:
            out = acc / l_i[:, None]
            tl.store(o_ptr + b * o_sb + rows[:, None] * o_sh + d[None, :], out.to(o_ptr.dtype.element_ty), mask=live)
        else:  # partial result and its log-sum-exp (base 2); an empty split leaves -inf
            nh = tl.num_programs(1) * G
            at = (b * nh + rows) * SPLITS + split
            safe = tl.where(l_i > 0, l_i, 1.0)
            tl.store(part_ptr + at[:, None] * D + d[None, :], acc / safe[:, None], mask=live)
            tl.store(lse_ptr + at, tl.where(l_i > 0, m_i + tl.math.log2(safe), float("-inf")), mask=g < G)

    @triton.jit
    def _merge_kernel(part_ptr, lse_ptr, o_ptr, o_sb, o_sh, NH: tl.constexpr, D: tl.constexpr,
                      SPLITS: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        at = (b * NH + h) * SPLITS + tl.arange(0, SPLITS)
        lse = tl.load(lse_ptr + at)
        w = tl.math.exp2(lse - tl.max(lse, 0))
        w = w / tl.sum(w, 0)
        d = tl.arange(0, D)
        part = tl.load(part_ptr + at[:, None] * D + d[None, :])
        out = tl.sum(part * w[:, None], 0)
        tl.store(o_ptr + b * o_sb + h * o_sh + d, out.to(o_ptr.dtype.element_ty))


def num_splits(rows: int, kv_heads: int, max_context: int, num_sms: int, block_n: int) -> int:
    """Context splits for a batch: enough programs for two waves over the SMs, no split shorter
    than four tiles, a power of two (the merge loads them as one vector)."""
    programs = rows * kv_heads
    if programs >= 2 * num_sms:
        return 1
    want = -(-2 * num_sms // programs)
    most = max(1, max_context // (4 * block_n))
    s = min(want, most, 64)
    return 1 << (s.bit_length() - 1) if s > 1 else 1


def gqa_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor, used: torch.Tensor,
               scale: float, splits: int = 1, block_n: int = BLOCK_N, num_warps: int = NUM_WARPS,
               num_stages: int = NUM_STAGES) -> torch.Tensor:
    """q [B, Hq, D]; k, v [rows, Hkv, D] (rows with any stride, heads and dims contiguous);
    request b attends rows start[b] .. start[b] + used[b] - 1 (int32 on the device) -> [B, Hq, D]."""
    B, Hq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    assert Hq == G * Hkv and q.stride(2) == 1 and k.stride(2) == 1 and v.stride(2) == 1
    assert D & (D - 1) == 0, "head_dim must be a power of two"
    assert splits & (splits - 1) == 0, "splits must be a power of two"
    out = torch.empty_like(q)
    if B == 0:
        return out
    qk_scale = scale * LOG2E
    GP = max(MIN_ROWS, triton.next_power_of_2(G))
    if splits > 1:
        part = torch.empty(B * Hq * splits, D, dtype=torch.float32, device=q.device)
        lse = torch.empty(B * Hq * splits, dtype=torch.float32, device=q.device)
    else:
        part = lse = out  # unused
    _decode_kernel[(B, Hkv, splits)](q, k, v, out, part, lse, start, used, qk_scale,
                                     q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                                     out.stride(0), out.stride(1), G=G, GP=GP, D=D, BLOCK_N=block_n,
                                     SPLITS=splits, num_warps=num_warps, num_stages=num_stages)
    if splits > 1:
        _merge_kernel[(B, Hq)](part, lse, out, out.stride(0), out.stride(1), NH=Hq, D=D, SPLITS=splits,
                               num_warps=4)
    return out


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor, used: torch.Tensor,
              scale: float) -> torch.Tensor:
    """The same attention per request in float32 (tests and benchmarks)."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    rep = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        s, n = int(start[b]), int(used[b])
        keys = k[s:s + n].float().repeat_interleave(rep, 1).transpose(0, 1)  # [Hq, n, D]
        vals = v[s:s + n].float().repeat_interleave(rep, 1).transpose(0, 1)
        w = torch.softmax(q[b].float()[:, None, :] @ keys.transpose(1, 2) * scale, dim=-1)
        out[b] = (w @ vals)[:, 0]
    return out
