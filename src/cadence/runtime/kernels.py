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


if HAVE_TRITON:

    @triton.jit
    def _qk_norm_rope_kernel(qkv_ptr, pos_ptr, cos_sin_ptr, qw_ptr, kw_ptr, tok_stride, cs_stride, eps,
                             N_Q: tl.constexpr, N_K: tl.constexpr, HEADS: tl.constexpr, HALF: tl.constexpr,
                             NORM: tl.constexpr):
        # one program per token: its q heads then its k heads, laid out back to back in the qkv row
        tok = tl.program_id(0)
        pos = tl.load(pos_ptr + tok)
        d = tl.arange(0, HALF)
        h = tl.arange(0, HEADS)
        cos = tl.load(cos_sin_ptr + pos * cs_stride + d)[None, :]
        sin = tl.load(cos_sin_ptr + pos * cs_stride + HALF + d)[None, :]
        mask = (h < N_Q + N_K)[:, None]
        base = qkv_ptr + tok * tok_stride + h[:, None] * (2 * HALF) + d[None, :]
        x1 = tl.load(base, mask=mask, other=0.0)
        x2 = tl.load(base + HALF, mask=mask, other=0.0)
        dtype = x1.dtype
        if NORM:  # per-head RMSNorm (Qwen3), rounded to the activation dtype as the reference does
            f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
            rstd = 1.0 / tl.sqrt((tl.sum(f1 * f1, axis=1) + tl.sum(f2 * f2, axis=1)) / (2 * HALF) + eps)
            is_q = (h < N_Q)[:, None]
            w1 = tl.where(is_q, tl.load(qw_ptr + d)[None, :], tl.load(kw_ptr + d)[None, :]).to(tl.float32)
            w2 = tl.where(is_q, tl.load(qw_ptr + HALF + d)[None, :], tl.load(kw_ptr + HALF + d)[None, :])
            w2 = w2.to(tl.float32)
            x1 = ((f1 * rstd[:, None]).to(dtype).to(tl.float32) * w1).to(dtype)
            x2 = ((f2 * rstd[:, None]).to(dtype).to(tl.float32) * w2).to(dtype)
        f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
        tl.store(base, (f1 * cos - f2 * sin).to(dtype), mask=mask)
        tl.store(base + HALF, (f2 * cos + f1 * sin).to(dtype), mask=mask)

    @triton.jit
    def _kv_write_kernel(k_ptr, v_ptr, k_dst, v_dst, idx_ptr, src_stride, dst_stride, N: tl.constexpr,
                         BLOCK: tl.constexpr):
        tok = tl.program_id(0)
        row = tl.load(idx_ptr + tok)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        k = tl.load(k_ptr + tok * src_stride + cols, mask=mask)
        v = tl.load(v_ptr + tok * src_stride + cols, mask=mask)
        tl.store(k_dst + row * dst_stride + cols, k, mask=mask)
        tl.store(v_dst + row * dst_stride + cols, v, mask=mask)


def qk_norm_rope_(qkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, positions: torch.Tensor,
                  cos_sin: torch.Tensor, q_weight: torch.Tensor | None, k_weight: torch.Tensor | None,
                  eps: float) -> None:
    """In place on the qkv projection [T, (Hq + 2 Hkv) * D]: optional per-head RMSNorm of q and k,
    then rotate-half RoPE of both; v untouched. One launch instead of six."""
    n_tok = qkv.shape[0]
    if n_tok == 0:
        return
    assert qkv.stride(-1) == 1 and cos_sin.is_contiguous()
    norm = q_weight is not None
    _qk_norm_rope_kernel[(n_tok,)](qkv, positions, cos_sin, q_weight if norm else qkv, k_weight if norm else qkv,
                                   qkv.stride(0), cos_sin.stride(0), eps, N_Q=num_heads, N_K=num_kv_heads,
                                   HEADS=triton.next_power_of_2(num_heads + num_kv_heads), HALF=head_dim // 2,
                                   NORM=norm, num_warps=4)


def kv_write(k: torch.Tensor, v: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor,
             idx: torch.Tensor) -> None:
    """k_rows[idx[t]] = k[t] and v_rows[idx[t]] = v[t] in one launch; k, v [T, H, D] (rows may be
    strided); k_rows, v_rows [R, H, D] with H, D contiguous and any row stride."""
    n_tok = k.shape[0]
    if n_tok == 0:
        return
    n = k.shape[1] * k.shape[2]
    assert k.stride(1) == k.shape[2] and k.stride(2) == 1 and v.stride() == k.stride()
    assert k_rows.stride(1) == k_rows.shape[2] and k_rows.stride(2) == 1 and v_rows.stride() == k_rows.stride()
    _kv_write_kernel[(n_tok,)](k, v, k_rows, v_rows, idx, k.stride(0), k_rows.stride(0), N=n,
                               BLOCK=triton.next_power_of_2(n), num_warps=4)


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
