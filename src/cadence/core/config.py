"""Configs of the pure-Python core, shared by the engine and the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

POLICIES = ("sarathi", "vllm", "orca", "static")


@dataclass(frozen=True)
class SchedulerConfig:
    """Batching policy and its limits."""

    policy: str = field(
        default="sarathi",
        metadata={"help": "batching policy", "choices": POLICIES},
    )
    max_num_seqs: int = field(default=256, metadata={"help": "most requests running at once"})
    max_num_batched_tokens: int = field(
        default=2048, metadata={"help": "token budget of one step (Sarathi-Serve's chunk size)"}
    )
    max_model_len: int | None = field(
        default=None, metadata={"help": "longest sequence (prompt + output); default: the model's context"}
    )
    async_scheduling: bool = field(default=False, metadata={
        "help": "plan and launch step n+1 while the device runs step n (sampled tokens feed the next step on "
                "the device; stop rules apply one step late, the extra token is discarded). The engine falls "
                "back to serial steps while any request asks for logprobs or penalties. Not for tensor "
                "parallelism; the simulator ignores it"})

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduler policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")


@dataclass(frozen=True)
class CacheConfig:
    """KV cache size and layout."""

    block_size: int = field(default=16, metadata={"help": "tokens per KV block"})
    num_blocks: int | None = field(
        default=None, metadata={"help": "KV blocks to allocate; default: sized from free memory"}
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "share of GPU memory Cadence may use (weights, activations, KV)"}
    )
    cpu_kv_cache_gib: float = field(default=2.0, metadata={"help": "KV cache size on CPU, in GiB"})
    enable_prefix_caching: bool = field(default=True, metadata={"help": "reuse KV of shared prompt prefixes"})

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if not 0.05 <= self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in [0.05, 1], got {self.gpu_memory_utilization}")
