"""Which slice of every layer one tensor-parallel rank holds, and the collectives that join them.

Megatron's split: q/k/v and gate/up are column-parallel (each rank computes some heads and some of
the MLP's intermediate features), o_proj and down_proj are row-parallel (each rank's partial sum,
then one all-reduce), the embedding and the LM head are split along the vocabulary.

Heads are split in whole GQA groups (one KV head and the query heads that read it), so that
attention on every rank is ordinary GQA over its own KV heads and the KV cache is sharded with no
copy. When KV heads do not divide the ranks evenly (SmolLM2-135M: 3 KV heads on 2 ranks) the
groups are dealt out as evenly as they go (2 and 1): correct, though the ranks are unevenly
loaded. With fewer KV heads than ranks each KV head is replicated on the ranks whose query heads
need it, as vLLM does; that needs the ranks to be a multiple of the KV heads and to divide the
query heads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cadence.models.config import ModelConfig


class TensorParallelError(ValueError):
    """A tensor-parallel size this model cannot be split into, or a rank that failed."""


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """(start, count) of part `index` when `n` items are dealt into `parts` contiguous parts that
    differ by at most one."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, base + (1 if index < extra else 0)


@dataclass(frozen=True)
class TPShard:
    """Rank `rank` of `size`: its heads, MLP features and vocabulary rows (each a (start, count))."""

    rank: int
    size: int
    q_heads: tuple[int, int]
    kv_heads: tuple[int, int]
    intermediate: tuple[int, int]
    vocab: tuple[int, int]  # every rank holds `vocab_per_rank` rows; those past the vocabulary are padding
    vocab_size: int  # the full vocabulary

    @property
    def is_driver(self) -> bool:
        return self.rank == 0

    def local_config(self, config: ModelConfig) -> ModelConfig:
        """The model as this rank sees it: its heads and features (attention backends size their
        KV cache from it, so the cache is sharded by construction)."""
        return dataclasses.replace(config, num_heads=self.q_heads[1], num_kv_heads=self.kv_heads[1],
                                   intermediate_size=self.intermediate[1])

    # -- collectives over the default process group --------------------------------------------
    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x)
        return x

    def gather_logits(self, local: torch.Tensor) -> torch.Tensor:
        """Local logits [N, vocab_per_rank] -> the full [N, vocab] on the driver (others get their
        own back, unused): sampling happens once, on rank 0."""
        local = local.contiguous()
        if self.rank != 0:
            dist.gather(local, None, dst=0)
            return local
        parts = [torch.empty_like(local) for _ in range(self.size)]
        dist.gather(local, parts, dst=0)
        return torch.cat(parts, dim=-1)[..., : self.vocab_size]


def make_shard(config: ModelConfig, size: int, rank: int) -> TPShard:
    """The slice of `config` that rank `rank` of `size` holds; TensorParallelError if the model
    cannot be split that way."""
    check_tensor_parallel(config, size)
    hq, hkv = config.num_heads, config.num_kv_heads
    group = hq // hkv
    if hkv >= size:  # whole GQA groups per rank
        kv_start, kv_count = split(hkv, size, rank)
        q_heads = (kv_start * group, kv_count * group)
        kv_heads = (kv_start, kv_count)
    else:  # each KV head replicated on size // hkv ranks
        per_rank = hq // size
        q_start = rank * per_rank
        q_heads = (q_start, per_rank)
        kv_heads = (q_start // group, 1)
    per_vocab = -(-config.vocab_size // size)
    return TPShard(rank=rank, size=size, q_heads=q_heads, kv_heads=kv_heads,
                   intermediate=split(config.intermediate_size, size, rank),
                   vocab=(rank * per_vocab, per_vocab), vocab_size=config.vocab_size)


def check_tensor_parallel(config: ModelConfig, size: int) -> None:
    hq, hkv = config.num_heads, config.num_kv_heads
    if size < 1:
        raise TensorParallelError(f"tensor_parallel_size must be >= 1, got {size}")
    if size == 1:
        return
    if hq % hkv:
        raise TensorParallelError(f"{hq} query heads are not a multiple of {hkv} KV heads")
    if hkv < size and (size % hkv or hq % size):
        raise TensorParallelError(
            f"tensor_parallel_size {size} does not fit this model: with {hkv} KV heads, a size above "
            f"{hkv} must be a multiple of {hkv} (each KV head replicated on whole ranks) and divide the "
            f"{hq} query heads; sizes that work here: "
            f"{', '.join(str(s) for s in valid_sizes(config, limit=max(16, size)))}")
    if size > config.intermediate_size:
        raise TensorParallelError(f"tensor_parallel_size {size} exceeds the MLP width {config.intermediate_size}")


def valid_sizes(config: ModelConfig, limit: int = 16) -> list[int]:
    hq, hkv = config.num_heads, config.num_kv_heads
    return [s for s in range(1, limit + 1) if s <= hkv or (s % hkv == 0 and hq % s == 0)]
