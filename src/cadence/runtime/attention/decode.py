"""The decode attention vattention calls (and `cadence profile` times): one query token a request
over keys at any row stride, `(q, k, v, cu_k, seqused_k, max_k) -> out` as in `flash.flash_varlen`.

Two kernels, chosen by `kind` (the engine's `--decode-kernel`):
- `triton` (`auto` on CUDA when Triton imports): triton_decode.gqa_decode, the grouped query heads
  of a KV head in one program, long contexts over few programs split in parts merged by log-sum-exp.
  Measured on an H200 (results/triton_decode_h200.json): 4.1 TB/s of K/V at 256 requests of ~880
  tokens against PyTorch flash's 2.3 TB/s (226 vs 404 us a layer), and 21-87 us against 30-113 us for
  1-16 long requests.
- `flash`: PyTorch's own flash kernel, grouped heads packed as rows for large batches and one query
  row a request (the kernel's split-KV route) for small ones (PACKED_MIN_TILES).

A kernel is fixed per row count and the backend's longest context (the split count comes from
both, not from the step's lengths), so a CUDA graph captures it, and a request's result depends only
on the row count of its step."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

from cadence.runtime.attention import flash, triton_decode

DecodeKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
KINDS = ("auto", "triton", "flash")

# Below this many (request, KV head) tiles a decode batch leaves most of an H100's 132 SMs idle if
# each tile walks its whole context, which is what flash's packing does; one query row per request
# instead lets the flash kernel take its own split-KV route for single-token queries (grouped heads
# swapped into rows, the context split across blocks, merged inside the kernel). Measured on the
# H100 (decode_attention_h100.json): packed 3-13x slower at 1-8 requests of 3k-25k tokens, 0-6 %
# faster from 32 requests x 8 KV heads up. (The flash kernel only.)
PACKED_MIN_TILES = 256


def packs_query_heads(rows: int, heads: int, kv_heads: int) -> bool:
    """Whether the flash kernel takes a decode batch of `rows` requests with grouped-query packing."""
    return heads > kv_heads and rows * kv_heads >= PACKED_MIN_TILES


def resolve(kind: str, device: torch.device) -> str:
    """`auto` -> `triton` on CUDA where Triton imports, else `flash`; errors name what is missing."""
    if kind not in KINDS:
        raise ValueError(f"decode kernel must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        return "triton" if triton_decode.available(device) else "flash"
    if kind == "triton" and not triton_decode.available(device):
        raise ValueError("the triton decode kernel needs a CUDA device and the triton package")
    return kind


@cache
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def decode_kernel(rows: int, heads: int, kv_heads: int, scale: float, device: torch.device, max_context: int,
                  kind: str = "auto") -> DecodeKernel:
    """Decode attention for batches of `rows` requests whose contexts are at most `max_context`."""
    if resolve(kind, device) == "triton":
        index = device.index if device.index is not None else torch.cuda.current_device()
        splits = triton_decode.num_splits(rows, kv_heads, max_context, _num_sms(index), triton_decode.BLOCK_N)
        return lambda q, k, v, cu_k, used, max_k: triton_decode.gqa_decode(q, k, v, cu_k, used, scale, splits)
    if packs_query_heads(rows, heads, kv_heads):
        cu_q = flash.packed_cu_q(rows, heads // kv_heads, device)
        return lambda q, k, v, cu_k, used, max_k: flash.flash_decode(q, k, v, cu_q, cu_k, max_k, used, scale)
    cu_1 = torch.arange(rows + 1, dtype=torch.int32, device=device)
    return lambda q, k, v, cu_k, used, max_k: flash.flash_varlen(q, k, v, cu_1, cu_k, 1, max_k, used, scale)
