"""Which part of each checkpoint tensor a tensor-parallel rank reads: safetensors slices are read
lazily, so a rank reads only its own rows or columns from disk, never the whole model."""

from __future__ import annotations

from typing import Any

import torch

from cadence.distributed.shard import TPShard
from cadence.models.config import ModelConfig

VOCAB_WEIGHTS = ("embed_tokens.weight", "lm_head.weight")


def shard_slice(name: str, shard: TPShard, config: ModelConfig) -> tuple[int, int, int] | None:
    """(dim, start, count) of checkpoint tensor `name` held by `shard`, or None if replicated."""
    hd = config.head_dim
    leaf = name.rsplit(".", 2)
    module = leaf[-2] if len(leaf) >= 2 else ""
    if module == "q_proj":
        return 0, shard.q_heads[0] * hd, shard.q_heads[1] * hd
    if module in ("k_proj", "v_proj"):
        return 0, shard.kv_heads[0] * hd, shard.kv_heads[1] * hd
    if module in ("gate_proj", "up_proj"):
        return 0, *shard.intermediate
    if module == "o_proj":
        return 1, shard.q_heads[0] * hd, shard.q_heads[1] * hd
    if module == "down_proj":
        return 1, *shard.intermediate
    if name.endswith(VOCAB_WEIGHTS):
        start, count = shard.vocab
        return 0, start, max(0, min(count, config.vocab_size - start))  # the last rank's padding is not on disk
    return None


def read_shard(f: Any, name: str, shard: TPShard, config: ModelConfig) -> torch.Tensor:
    """This rank's part of tensor `name` from an open safetensors file `f`."""
    cut = shard_slice(name, shard, config)
    if cut is None:
        return f.get_tensor(name)
    dim, start, count = cut
    part = f.get_slice(name)
    return part[start:start + count] if dim == 0 else part[:, start:start + count]
