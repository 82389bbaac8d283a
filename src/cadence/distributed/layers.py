"""The vocabulary-parallel embedding: each rank holds a contiguous block of rows."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cadence.distributed.shard import TPShard


class VocabParallelEmbedding(nn.Module):
    """Looks up the ids that fall in this rank's rows, zeros for the others, then one all-reduce
    adds the ranks' rows together (every id lives on exactly one rank). No data-dependent shapes,
    so it can be captured in a CUDA graph."""

    def __init__(self, shard: TPShard, hidden_size: int) -> None:
        super().__init__()
        self.shard = shard
        self.weight = nn.Parameter(torch.empty(shard.vocab[1], hidden_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        start, count = self.shard.vocab
        local = input_ids - start
        inside = (local >= 0) & (local < count)
        x = F.embedding(torch.where(inside, local, 0), self.weight)
        x.masked_fill_(~inside.unsqueeze(-1), 0.0)
        return self.shard.all_reduce(x)
