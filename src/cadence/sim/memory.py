"""KV blocks of a simulated replica: GPU memory minus weights minus an activation reserve, as the
engine sizes its cache (gpu_memory_utilization of the card, less what the weights and a profiling
pass over the largest step take)."""

from __future__ import annotations

from dataclasses import dataclass

from cadence.models.config import ModelConfig
from cadence.sim.errors import SimInputError
from cadence.sim.hardware import GiB, GPUSpec
from cadence.sim.shapes import DTYPE_BYTES, shard


@dataclass(frozen=True)
class MemoryPlan:
    weight_bytes_per_gpu: int
    activation_bytes_per_gpu: int
    kv_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    num_blocks: int  # per replica (every GPU of it holds its share of each block)
    block_size: int

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size


def plan_memory(name: str, mc: ModelConfig, gpu: GPUSpec, tp: int, pp: int, block_size: int,
                max_num_batched_tokens: int, max_num_seqs: int, utilization: float = 0.9) -> MemoryPlan:
    s = shard(name, mc, tp)
    layers = mc.num_layers // pp
    emb = DTYPE_BYTES * s.vocab * s.hidden * (1 if mc.tie_word_embeddings else 2)
    weights = layers * s.layer_weight_bytes() + emb  # embeddings counted on every stage: conservative
    # Peak of the largest step: its hidden states and MLP intermediate, plus fp32 logits of the sampled rows.
    act = (max_num_batched_tokens * DTYPE_BYTES * (4 * s.hidden + 3 * s.intermediate + s.q_size + 2 * s.kv_size)
           + 2 * max_num_seqs * s.vocab * 4 + GiB // 2)
    per_token = layers * s.kv_bytes_per_token_per_layer()
    budget = int(utilization * gpu.memory_bytes) - weights - act
    if budget < per_token * block_size:
        raise SimInputError(
            f"{name} does not fit on {gpu.name} with tp={tp} pp={pp}: weights take {weights / GiB:.1f} GiB and "
            f"activations {act / GiB:.1f} GiB of the {utilization * gpu.memory_bytes / GiB:.1f} GiB usable per GPU, "
            f"leaving no room for the KV cache")
    return MemoryPlan(weights, act, budget, per_token, budget // (per_token * block_size), block_size)
