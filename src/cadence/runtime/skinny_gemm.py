"""Weight-streaming GEMM for decode batches (Triton): y = x @ W^T for a few rows of x.

A decode step of an 8B model at batch <= 64 is a read of every weight once: the work per weight
byte is a few FLOPs, so the matmul is bound by how fast the weights stream in, not by tensor
cores. Each program here owns a slice of output columns (and, when there are too few slices to
fill the GPU, a slice of K: split-K, partial sums reduced by a second launch) and streams its
weight tile through a multi-stage pipeline while the handful of x rows sit in one 16-64-row
tensor-core tile. Larger batches go to cuBLAS (models/layers.py `Linear`), which is the better kernel once
compute matters. Checked against torch's matmul in the GPU suite and, on the CPU, through Triton's
interpreter."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cadence.runtime.kernels import HAVE_TRITON

if HAVE_TRITON:
    import triton
    import triton.language as tl

# Rows above this go to cuBLAS.
MAX_ROWS = 64


@dataclass(frozen=True)
class TileConfig:
    block_n: int = 64
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 4


def pick_config(m: int, n: int, k: int, num_sms: int) -> TileConfig:
    """Enough programs to give every SM two, from column slices first and then K slices."""
    block_n = 64
    block_k = 128 if m <= 32 else 64
    tiles = -(-n // block_n)
    split = 1
    while tiles * split < 2 * num_sms and k % (block_k * split * 2) == 0 and split < 16:
        split *= 2
    return TileConfig(block_n=block_n, block_k=block_k, split_k=split)


if HAVE_TRITON:

    @triton.jit
    def _skinny_kernel(x_ptr, w_ptr, out_ptr, M, N, K, x_stride, w_stride, out_stride, split_stride,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rows = tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        k_span = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
        k_lo = pid_k * k_span
        k_hi = tl.minimum(k_lo + k_span, K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_lo, k_hi, BLOCK_K):
            ks = k + tl.arange(0, BLOCK_K)
            if EVEN_K:
                x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=rows[:, None] < M, other=0.0)
                w = tl.load(w_ptr + cols[:, None] * w_stride + ks[None, :], mask=cols[:, None] < N, other=0.0)
            else:
                x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :],
                            mask=(rows[:, None] < M) & (ks[None, :] < k_hi), other=0.0)
                w = tl.load(w_ptr + cols[:, None] * w_stride + ks[None, :],
                            mask=(cols[:, None] < N) & (ks[None, :] < k_hi), other=0.0)
            acc = tl.dot(x, tl.trans(w), acc)
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        dst = out_ptr + pid_k * split_stride + rows[:, None] * out_stride + cols[None, :]
        tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _split_sum_kernel(part_ptr, out_ptr, n_elems, split_stride, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elems
        acc = tl.load(part_ptr + offs, mask=mask, other=0.0)
        for s in tl.static_range(1, SPLIT_K):
            acc += tl.load(part_ptr + s * split_stride + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def skinny_mm(x: torch.Tensor, weight: torch.Tensor, config: TileConfig | None = None,
              num_sms: int = 132) -> torch.Tensor:
    """x [M, K] @ weight[N, K]^T -> [M, N] in x's dtype, M <= MAX_ROWS, both contiguous in K."""
    m, k = x.shape
    n = weight.shape[0]
    if m > MAX_ROWS or m == 0:
        raise ValueError(f"skinny_mm takes 1..{MAX_ROWS} rows, got {m}")
    if weight.shape[1] != k or x.stride(-1) != 1 or weight.stride(-1) != 1:
        raise ValueError(f"skinny_mm: x {tuple(x.shape)} and weight {tuple(weight.shape)} must agree in K "
                         "and be contiguous along it")
    c = config or pick_config(m, n, k, num_sms)
    block_m = max(16, triton.next_power_of_2(m))
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, c.block_n), c.split_k)
    even = k % (c.block_k * c.split_k) == 0
    if c.split_k == 1:
        _skinny_kernel[grid](x, weight, out, m, n, k, x.stride(0), weight.stride(0), out.stride(0), 0,
                             BLOCK_M=block_m, BLOCK_N=c.block_n, BLOCK_K=c.block_k, SPLIT_K=1, EVEN_K=even,
                             num_warps=c.num_warps, num_stages=c.num_stages)
        return out
    part = torch.empty((c.split_k, m, n), dtype=torch.float32, device=x.device)
    _skinny_kernel[grid](x, weight, part, m, n, k, x.stride(0), weight.stride(0), n, m * n,
                         BLOCK_M=block_m, BLOCK_N=c.block_n, BLOCK_K=c.block_k, SPLIT_K=c.split_k, EVEN_K=even,
                         num_warps=c.num_warps, num_stages=c.num_stages)
    block = 1024
    _split_sum_kernel[(triton.cdiv(m * n, block),)](part, out, m * n, m * n, SPLIT_K=c.split_k, BLOCK=block,
                                                    num_warps=4)
    return out


def stream_rows(kind: str, device: torch.device) -> int:
    """Rows up to which a model on `device` streams weights under `--decode-gemm kind` (0: cuBLAS only)."""
    if kind not in ("auto", "triton", "cublas"):
        raise ValueError(f"unknown decode gemm {kind!r}: auto, triton or cublas")
    if kind == "cublas" or device.type != "cuda":
        return 0
    if not HAVE_TRITON:
        if kind == "triton":
            raise RuntimeError("--decode-gemm triton needs the triton package")
        return 0
    return MAX_ROWS


def usable(x: torch.Tensor) -> bool:
    """Whether skinny_mm can take this activation (CUDA, Triton importable, contiguous rows)."""
    return HAVE_TRITON and x.is_cuda and x.stride(-1) == 1
