"""The interface between the model and a KV-cache layout plus its attention kernel."""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch

from cadence.models.config import ModelConfig
from cadence.runtime.step_batch import StepBatch

StepAttention = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class AttentionBackend(abc.ABC):
    """Owns the KV cache tensors for `num_blocks` blocks of `block_size` tokens, in whatever
    layout suits its kernel, and gives the model one attention callable per step."""

    name = "base"

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.config = config
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.dtype = dtype
        self.device = device

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return config.kv_bytes_per_token(itemsize) * block_size

    @abc.abstractmethod
    def bind(self, batch: StepBatch) -> StepAttention:
        """Prepare what every layer of this step shares (indices, masks) and return the callable
        `attn(layer, q, k, v)` that writes this step's K/V and attends."""

    def release(self) -> None:
        """Give back device memory (called on shutdown)."""
