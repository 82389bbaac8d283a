"""The engine's configuration: which model, how to load it, where to run; plus the core's configs."""

from __future__ import annotations

from dataclasses import dataclass, field

from cadence.core.config import CacheConfig, SchedulerConfig


@dataclass(frozen=True)
class ModelLoadConfig:
    """Which model to load and how."""

    model: str | None = field(
        default=None,
        metadata={"help": "local Hugging Face folder, a named shape (qwen3-0.6b, llama3-8b, llama3-70b, llama2-70b) with "
                          "--load-format dummy, or none for the built-in SmolLM2-135M-Instruct"},
    )
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder (default: the model's)"})
    load_format: str = field(default="auto", metadata={"help": "auto/safetensors, or dummy (random weights)",
                                                        "choices": ("auto", "safetensors", "dummy")})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    attention_backend: str = field(default="auto", metadata={"help": "auto, torch, vattention or paged"})
    piecewise_graphs: bool = field(default=True, metadata={
        "help": "CUDA graphs also for steps with prefill tokens, captured in pieces around attention "
                "(one GPU with CUDA graphs; a 512-token prefill step of llama3-8b on the H100: 31.5 -> 9.4 ms, "
                "benchmarks/NOTES.md); --no-piecewise-graphs runs those steps eagerly"})
    decode_kernel: str = field(default="auto", metadata={
        "help": "decode attention of the vattention backend: triton (Triton kernel, grouped query heads a "
                "program, long contexts split; on the H200 4.1 vs 2.3 TB/s of K/V at 256 requests, "
                "benchmarks/NOTES.md), flash (PyTorch's flash kernel), auto (triton on CUDA where it imports)",
        "choices": ("auto", "triton", "flash")})
    seed: int = field(default=0, metadata={"help": "seed for dummy weights and unseeded sampling"})
    served_model_name: str | None = field(default=None, metadata={"help": "model name shown by the API"})


@dataclass(frozen=True)
class ParallelConfig:
    """How one engine is spread over devices (tensor parallelism, docs/distributed.md)."""

    tensor_parallel_size: int = field(
        default=1, metadata={"help": "ranks (processes, one per GPU) that split every layer of the model"}
    )
    distributed_timeout: float = field(
        default=300.0, metadata={"help": "seconds a rank waits for another (start-up, one collective) before failing"}
    )

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.distributed_timeout <= 0:
            raise ValueError(f"distributed_timeout must be > 0, got {self.distributed_timeout}")


@dataclass(frozen=True)
class EngineConfig:
    load: ModelLoadConfig = field(default_factory=ModelLoadConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
