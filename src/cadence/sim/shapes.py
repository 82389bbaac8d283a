"""Model shapes for the simulator, and what one GPU holds of them under tensor and pipeline parallelism."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cadence.models.config import NAMED_SHAPES, ModelConfig

SIM_SHAPES: dict[str, dict] = {
    **NAMED_SHAPES,
    # A toy shape for CPU profiling smoke tests.
    "sim-tiny": {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "eos_token_id": 2,
    },
}  # fmt: skip
DTYPE_BYTES = 2  # bf16 everywhere on the GPU


def model_config(name: str) -> ModelConfig:
    if name not in SIM_SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {', '.join(SIM_SHAPES)}")
    return ModelConfig.from_dict(SIM_SHAPES[name])


@dataclass(frozen=True)
class ShardedShape:
    """What one GPU computes: heads, KV heads, intermediate and vocabulary split by TP; layers by PP."""

    model: str
    tp: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    num_layers: int  # of the whole model
    qk_norm: bool

    @property
    def q_size(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_weight_bytes(self) -> int:
        h = self.hidden
        return DTYPE_BYTES * (h * (self.q_size + 2 * self.kv_size) + self.q_size * h + 3 * h * self.intermediate)

    def kv_bytes_per_token_per_layer(self) -> int:
        return 2 * self.kv_size * DTYPE_BYTES


def shard(name: str, mc: ModelConfig, tp: int) -> ShardedShape:
    if tp < 1 or mc.num_heads % tp or mc.intermediate_size % tp:
        raise ValueError(f"{name}: {mc.num_heads} heads / intermediate {mc.intermediate_size} do not split over tp={tp}")
    # With more GPUs than KV heads each GPU keeps a replica of one KV head (as vLLM does).
    kv_heads = max(1, mc.num_kv_heads // tp)
    return ShardedShape(name, tp, mc.hidden_size, mc.num_heads // tp, kv_heads, mc.head_dim,
                        mc.intermediate_size // tp, -(-mc.vocab_size // tp), mc.num_layers, mc.qk_norm)


def sharded_config(mc: ModelConfig, s: ShardedShape) -> ModelConfig:
    """A ModelConfig with one GPU's share of heads and intermediate, so the model's own layers build it."""
    return dataclasses.replace(mc, num_heads=s.heads, num_kv_heads=s.kv_heads, intermediate_size=s.intermediate,
                               vocab_size=s.vocab)
