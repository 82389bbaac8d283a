"""Fused small ops for CUDA tensors (Triton): residual add + RMSNorm, SiLU-and-mul, RoPE.

Each replaces several PyTorch launches (and their round trips through memory) with one. The
models call them only for CUDA tensors when Triton imports; everything else takes the plain
PyTorch path in models/layers.py, which stays the reference. Numerics follow that path: the
residual sum is rounded to the activation dtype, the norm is computed in float32."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # CPU installs
    HAVE_TRITON = False


def enabled(x: torch.Tensor) -> bool:
    return HAVE_TRITON and x.is_cuda


if HAVE_TRITON:

    @triton.jit
    def _rms_norm_kernel(x_ptr, res_ptr, out_ptr, res_out_ptr, w_ptr, n_cols, x_stride, res_stride,
                         out_stride, eps, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
        if HAS_RES:
            r = tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0)
            x = x + r  # rounded to the activation dtype, as the reference path does
            tl.store(res_out_ptr + row * n_cols + cols, x, mask=mask)
        xf = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        y = (xf * rstd).to(x.dtype)
        tl.store(out_ptr + row * out_stride + cols, (y.to(tl.float32) * w.to(tl.float32)).to(x.dtype), mask=mask)

    @triton.jit
    def _silu_and_mul_kernel(x_ptr, out_ptr, n_cols, x_stride, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_cols
        gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + row * x_stride + n_cols + cols, mask=mask, other=0.0)
        silu = (gate / (1.0 + tl.exp(-gate))).to(up.dtype)
        tl.store(out_ptr + row * n_cols + cols, silu * up, mask=mask)

    @triton.jit
    def _rope_kernel(x_ptr, pos_ptr, cos_sin_ptr, n_heads, tok_stride, head_stride, cs_stride,
                     HALF: tl.constexpr, HEADS: tl.constexpr):
        tok = tl.program_id(0)
        pos = tl.load(pos_ptr + tok)
        d = tl.arange(0, HALF)
        h = tl.arange(0, HEADS)
        cos = tl.load(cos_sin_ptr + pos * cs_stride + d)
        sin = tl.load(cos_sin_ptr + pos * cs_stride + HALF + d)
        mask = (h < n_heads)[:, None]
        base = x_ptr + tok * tok_stride + h[:, None] * head_stride + d[None, :]
        x1 = tl.load(base, mask=mask, other=0.0)
        x2 = tl.load(base + HALF, mask=mask, other=0.0)
        x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
        tl.store(base, (x1f * cos[None, :] - x2f * sin[None, :]).to(x1.dtype), mask=mask)
        tl.store(base + HALF, (x2f * cos[None, :] + x1f * sin[None, :]).to(x1.dtype), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    shape = x.shape
    x2 = _rows(x)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    n_rows, n_cols = x2.shape
    out = torch.empty(n_rows, n_cols, dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(n_cols)
    warps = 8 if block >= 4096 else 4
    if residual is None:
        _rms_norm_kernel[(n_rows,)](x2, x2, out, out, weight, n_cols, x2.stride(0), 0, n_cols, eps,
                                    HAS_RES=False, BLOCK=block, num_warps=warps)
        return out.view(shape)
    r2 = _rows(residual)
    res_out = torch.empty_like(out)
    _rms_norm_kernel[(n_rows,)](x2, r2, out, res_out, weight, n_cols, x2.stride(0), r2.stride(0), n_cols, eps,
                                HAS_RES=True, BLOCK=block, num_warps=warps)
    return out.view(shape), res_out.view(shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    x2 = _rows(x)
    n_rows, n_cols = x2.shape[0], x2.shape[1] // 2
    out = torch.empty(n_rows, n_cols, dtype=x.dtype, device=x.device)
    block = 1024
    _silu_and_mul_kernel[(n_rows, triton.cdiv(n_cols, block))](x2, out, n_cols, x2.stride(0), BLOCK=block,
                                                               num_warps=4)
    return out.view(*x.shape[:-1], n_cols)


def rope_(x: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of x [T, heads, head_dim] in place (x may be a strided view)."""
    n_tok, n_heads, dim = x.shape
    assert x.stride(-1) == 1 and cos_sin.is_contiguous()
    if n_tok == 0:
        return x
    _rope_kernel[(n_tok,)](x, positions, cos_sin, n_heads, x.stride(0), x.stride(1), cos_sin.stride(0),
                           HALF=dim // 2, HEADS=triton.next_power_of_2(n_heads), num_warps=4)
    return x
