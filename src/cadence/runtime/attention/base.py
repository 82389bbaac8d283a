"""The interface between the model and a KV-cache layout plus its attention kernel."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

import torch

from cadence.models.config import ModelConfig
from cadence.runtime.step_batch import StepBatch

StepAttention = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class AttentionBackend(abc.ABC):
    """Owns the KV cache tensors for `num_blocks` blocks of `block_size` tokens, in whatever
    layout suits its kernel, and gives the model one attention callable per step."""

    name = "base"
    supports_cuda_graphs = False  # True: implements prepare_decode() over static buffers

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, *, max_num_seqs: int = 256, max_model_len: int | None = None,
                 defer_reuse: bool = False, decode_kernel: str = "auto") -> None:
        """`defer_reuse`: steps overlap (async scheduling), so what a request held when it ended may
        still be read by the step in flight: a backend that remaps memory must keep it one step more.
        `decode_kernel`: which decode attention a backend with a choice uses (attention/decode.py)."""
        self.config = config
        self.defer_reuse = defer_reuse
        self.decode_kernel_kind = decode_kernel
        self.prefix_hit_multiple = 1  # prefix hits the KV manager may hand out: a multiple of this many blocks
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.dtype = dtype
        self.device = device
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len or config.max_model_len

    @classmethod
    def bytes_per_block(cls, config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        """Device bytes one block costs in this backend's layout (padding included)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return config.kv_bytes_per_token(itemsize) * block_size

    @classmethod
    def fixed_overhead_bytes(cls, config: ModelConfig, block_size: int, dtype: torch.dtype,
                             max_num_seqs: int = 256) -> int:
        """Device bytes the backend takes besides its blocks (scratch, spare pages)."""
        return 0

    @abc.abstractmethod
    def bind(self, batch: StepBatch) -> StepAttention:
        """Prepare what every layer of this step shares (indices, masks) and return the callable
        `attn(layer, q, k, v)` that writes this step's K/V and attends."""

    def free_requests(self, request_ids: Iterable[str]) -> None:
        """These requests ended or were preempted: forget their per-request state. With
        `defer_reuse` this is called every step (possibly with no ids)."""

    def after_launch(self, batch: StepBatch) -> None:
        """Called once the step's GPU work is queued, while the GPU runs: work for later steps."""

    def wants_idle_time(self) -> bool:
        """Whether idle_work has something to do (the runner then gives it its waits for the GPU)."""
        return False

    def idle_work(self, busy: Callable[[], bool]) -> int:
        """Work for later steps, done in small pieces while `busy()` (the GPU still runs a step)."""
        return 0

    def prepare_decode(self, batch: StepBatch, bucket: int) -> None:
        """Fill the static buffers read by `graph_attention(bucket)` for a decode-only batch
        padded to `bucket` rows."""
        raise NotImplementedError(f"{self.name} has no CUDA-graph path")

    def graph_attention(self, bucket: int, positions: torch.Tensor) -> StepAttention:
        """The attention callable to capture for decodes of `bucket` rows: it reads only static
        buffers (and `positions`, the graph's static input), so replays see new batches."""
        raise NotImplementedError(f"{self.name} has no CUDA-graph path")

    def release(self) -> None:
        """Give back device memory (called on shutdown)."""
