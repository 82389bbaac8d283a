"""Decoder shapes the planner needs: layers, per-layer weight bytes and FLOPs, KV bytes per token."""

from __future__ import annotations

from dataclasses import dataclass

from cadence.plan.errors import PlanError


@dataclass(frozen=True)
class ModelSpec:
    """A Llama-family decoder; embeddings and LM head stay on the coordinator, as in Helix."""

    name: str
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    intermediate: int
    head_dim: int = 0  # 0: hidden // num_heads
    bytes_per_param: float = 2.0

    def __post_init__(self) -> None:
        if min(self.num_layers, self.hidden, self.num_heads, self.num_kv_heads, self.intermediate) <= 0:
            raise PlanError(f"model {self.name!r}: layers, hidden, heads and intermediate must be positive")
        if self.num_heads % self.num_kv_heads:
            raise PlanError(f"model {self.name!r}: {self.num_heads} heads not divisible by {self.num_kv_heads} KV heads")
        if self.bytes_per_param <= 0:
            raise PlanError(f"model {self.name!r}: bytes per parameter must be positive")

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.num_heads

    @property
    def params_per_layer(self) -> int:
        q_o = 2 * self.hidden * self.num_heads * self.dim
        k_v = 2 * self.hidden * self.num_kv_heads * self.dim
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        return q_o + k_v + mlp

    @property
    def layer_bytes(self) -> float:
        return self.params_per_layer * self.bytes_per_param

    @property
    def kv_bytes_per_token_layer(self) -> float:
        # K and V kept in 16-bit whatever the weight format, as vLLM does by default.
        return 2 * self.num_kv_heads * self.dim * 2.0

    @property
    def activation_peak_bytes_per_token(self) -> float:
        """Live activations per token in flight at a layer's MLP, its peak: residual stream and normed input
        (2 x hidden) and gate, up and their product (3 x intermediate), 16-bit; buffers are reused across layers."""
        return (2 * self.hidden + 3 * self.intermediate) * 2.0

    @property
    def activation_bytes(self) -> float:
        """Bytes sent between pipeline stages per token (one hidden state, 16-bit)."""
        return self.hidden * 2.0


# Shapes from the models' published config.json files.
KNOWN_MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama-30b", num_layers=60, hidden=6656, num_heads=52, num_kv_heads=52, intermediate=17920),
        ModelSpec("llama2-70b", num_layers=80, hidden=8192, num_heads=64, num_kv_heads=8, intermediate=28672),
        ModelSpec("llama3-8b", num_layers=32, hidden=4096, num_heads=32, num_kv_heads=8, intermediate=14336),
        ModelSpec("llama3-70b", num_layers=80, hidden=8192, num_heads=64, num_kv_heads=8, intermediate=28672),
        ModelSpec(
            "qwen3-0.6b", num_layers=28, hidden=1024, num_heads=16, num_kv_heads=8, intermediate=3072, head_dim=128
        ),
    )
}
ALIASES = {"llama30b": "llama-30b", "llama-2-70b": "llama2-70b", "llama70b": "llama2-70b", "llama-3-8b": "llama3-8b"}


def get_model(name: str) -> ModelSpec:
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in KNOWN_MODELS:
        raise PlanError(
            f"unknown model {name!r} (known: {', '.join(KNOWN_MODELS)}); "
            "or give --layers/--hidden/--heads/--kv-heads/--intermediate"
        )
    return KNOWN_MODELS[key]
