"""The sizes the engine captures CUDA graphs at, and what a step is padded to. Pure Python, so the
simulator pads a step exactly as the engine does (a graphed step costs its bucket's time).

Decode-only steps replay one graph per batch bucket; steps with prefill tokens replay piecewise
graphs per token bucket (up to MAX_PIECEWISE_TOKENS; larger steps run eagerly). The token buckets
are a quarter of the previous power of two apart above 512, so padding costs at most 25 % of a
step and ~10 % on average there (the device time of a prefill step is nearly linear in its tokens,
while a replay saves the same launch time at any size)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

DECODE_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
PIECEWISE_TOKEN_SIZES = (16, 32, 64, 128, 256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560,
                         3072, 3584, 4096)
# Larger steps are bound by the device, not by launches, and a bucket's static buffers grow with its
# tokens: steps over this many tokens run eagerly.
MAX_PIECEWISE_TOKENS = 4096


def _buckets(sizes: Sequence[int], largest: int) -> list[int]:
    return [s for s in sizes if s < largest] + [largest]


def decode_batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes of the decode graphs for a max batch of `max_batch` (which is the last)."""
    return _buckets(DECODE_BATCH_SIZES, max_batch)


def piecewise_token_buckets(max_tokens: int) -> list[int]:
    """Token counts of the piecewise graphs for steps of up to `max_tokens` tokens (the last)."""
    return _buckets(PIECEWISE_TOKEN_SIZES, max_tokens)


def padded(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket that holds n (buckets ascending), or None if none does."""
    i = bisect_left(buckets, n)
    return buckets[i] if i < len(buckets) else None
