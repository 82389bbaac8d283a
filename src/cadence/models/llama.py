"""One decoder for Llama 2/3, Mistral, Qwen2/2.5 (qkv bias) and Qwen3 (q/k RMSNorm)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from cadence.distributed.shard import TPShard
from cadence.models.config import ModelConfig
from cadence.models.layers import RMSNorm, RotaryEmbedding, silu_and_mul
from cadence.runtime import kernels


class Attention(Protocol):
    """What the model needs from an attention backend for one step: store this step's K/V for
    `layer` and attend. q: [T, Hq, D], k and v: [T, Hkv, D] -> [T, Hq, D]."""

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class DecoderAttention(nn.Module):
    """With a tensor-parallel `shard`: this rank's heads only (qkv column-parallel, o_proj
    row-parallel, then one all-reduce)."""

    def __init__(self, config: ModelConfig, layer: int, shard: TPShard | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.shard = shard
        local = shard.local_config(config) if shard is not None else config
        self.num_heads, self.num_kv_heads, self.head_dim = local.num_heads, local.num_kv_heads, local.head_dim
        self.q_size, self.kv_size = local.q_size, local.kv_size
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding, positions: torch.Tensor, attn: Attention):
        qkv = self.qkv_proj(x)
        fused = kernels.enabled(qkv)
        if fused:  # q/k norm and RoPE in place, one kernel (same numerics as the path below)
            norm = self.q_norm is not None
            kernels.qk_norm_rope_(qkv, self.num_heads, self.num_kv_heads, self.head_dim, positions, rope.cos_sin,
                                  self.q_norm.weight if norm else None, self.k_norm.weight if norm else None,
                                  self.q_norm.eps if norm else 0.0)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if not fused:
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = rope(positions, q, k)
        out = self.o_proj(attn(self.layer, q, k, v).reshape(-1, self.q_size))
        return out if self.shard is None else self.shard.all_reduce(out)


class DecoderMLP(nn.Module):
    def __init__(self, config: ModelConfig, shard: TPShard | None = None) -> None:
        super().__init__()
        self.shard = shard
        width = shard.intermediate[1] if shard is not None else config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * width, bias=False)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.down_proj(silu_and_mul(self.gate_up_proj(x)))
        return out if self.shard is None else self.shard.all_reduce(out)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, shard: TPShard | None = None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = DecoderAttention(config, layer, shard)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = DecoderMLP(config, shard)

    def forward(self, x, residual, rope, positions, attn: Attention):
        if residual is None:
            residual = x
            h = self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(h, rope, positions, attn)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class DecoderModel(nn.Module):
    def __init__(self, config: ModelConfig, shard: TPShard | None = None) -> None:
        super().__init__()
        if shard is None:
            self.embed_tokens: nn.Module = nn.Embedding(config.vocab_size, config.hidden_size)
        else:
            from cadence.distributed.layers import VocabParallelEmbedding

            self.embed_tokens = VocabParallelEmbedding(shard, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i, shard) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: Attention) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual, self.rotary_emb, positions, attn)
        x, _ = self.norm(x, residual)
        return x


class LlamaForCausalLM(nn.Module):
    """Module names follow Hugging Face's so checkpoints load by name (q/k/v and gate/up fused).
    With a tensor-parallel `shard` every layer holds only this rank's slice (cadence.distributed)."""

    def __init__(self, config: ModelConfig, shard: TPShard | None = None) -> None:
        super().__init__()
        self.config = config
        self.shard = shard
        self.model = DecoderModel(config, shard)
        vocab = shard.vocab[1] if shard is not None else config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, vocab, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: Attention) -> torch.Tensor:
        """Flattened tokens of every request in the step -> final hidden states [T, hidden]."""
        return self.model(input_ids, positions, attn)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, vocab] float logits; under tensor parallelism full only on rank 0 (the sampler's)."""
        logits = self.lm_head(hidden).float()
        return logits if self.shard is None else self.shard.gather_logits(logits)
