"""Chained hashes of full blocks: a block's hash covers every token before it."""

from __future__ import annotations

from collections.abc import Sequence

ROOT_HASH = 0x9E3779B97F4A7C15  # any fixed seed; tuples of ints hash deterministically in CPython


def hash_block_tokens(parent_hash: int | None, tokens: Sequence[int]) -> int:
    return hash((ROOT_HASH if parent_hash is None else parent_hash, tuple(tokens)))


def extend_block_hashes(hashes: list[int], token_ids: Sequence[int], block_size: int) -> None:
    """Append the hashes of every full block of `token_ids` not yet in `hashes` (in place)."""
    start = len(hashes) * block_size
    parent = hashes[-1] if hashes else None
    while start + block_size <= len(token_ids):
        parent = hash_block_tokens(parent, token_ids[start : start + block_size])
        hashes.append(parent)
        start += block_size
