"""The operators a step runs, their profiling grid, and their roofline costs.

One decoder layer runs: norm, qkv_proj, rope, attention, o_proj, (all-reduce), norm, mlp_gate_up,
act (SiLU-and-mul), mlp_down, (all-reduce). Around the layers: embed, a final norm, lm_head over the
sampled rows and the sampler. `cpu_step` is the engine's host time per step (scheduler + batch).
"""

from __future__ import annotations

from cadence.sim.hardware import GPUSpec, all_reduce_seconds
from cadence.sim.shapes import DTYPE_BYTES, ShardedShape

# ops keyed by the number of tokens in the step (lm_head: by sampled rows)
TOKEN_OPS = ("norm", "qkv_proj", "rope", "o_proj", "mlp_gate_up", "act", "mlp_down", "embed", "lm_head")
LAYER_TOKEN_OPS = ("qkv_proj", "rope", "o_proj", "mlp_gate_up", "act", "mlp_down")  # plus 2 norms
BATCH_OPS = ("sampler",)  # keyed by sampled rows
ATTN_OPS = ("attn_prefill", "attn_decode")
ALL_OPS = (*TOKEN_OPS, *BATCH_OPS, *ATTN_OPS, "all_reduce", "cpu_step")
SERVED_OPS = ("served_decode", "served_host", "served_eager", "served_prefill", "served_request_in",
              "served_request_out")  # optional: from an engine step trace (calibration.py)

TOKEN_GRID = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192,
              12288, 16384, 24576, 32768)
DECODE_BATCH_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DECODE_CTX_GRID = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
PREFILL_Q_GRID = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PREFILL_KV_GRID = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

# Shares of the roofline that kernels reach at scale (flash attention reads K/V at about 1.9 of 3.0
# TB/s per DESIGN.md; cuBLAS bf16 GEMMs about 70% of the measured matmul ceiling at these shapes).
GEMM_EFF, ATTN_FLOP_EFF, ATTN_BW_EFF, ELEMENTWISE_BW_EFF = 0.7, 0.5, 0.63, 0.8


def _roof(gpu: GPUSpec, flops: float, nbytes: float, flop_eff: float, bw_eff: float, kernels: int = 1) -> float:
    return kernels * gpu.kernel_launch_s + max(flops / (gpu.matmul_flops * flop_eff), nbytes / (gpu.mem_bandwidth * bw_eff))


def _gemm(gpu: GPUSpec, t: int, k: int, n: int) -> float:
    return _roof(gpu, 2.0 * t * k * n, DTYPE_BYTES * (k * n + t * (k + n)), GEMM_EFF, 0.85)


def roofline_token_op(op: str, s: ShardedShape, gpu: GPUSpec, t: int) -> float:
    h, b = s.hidden, DTYPE_BYTES
    if op == "norm":
        return _roof(gpu, 0, 4 * t * h * b, 1, ELEMENTWISE_BW_EFF)
    if op == "qkv_proj":
        return _gemm(gpu, t, h, s.q_size + 2 * s.kv_size)
    if op == "rope":
        return _roof(gpu, 0, 2 * t * (s.q_size + s.kv_size) * b, 1, ELEMENTWISE_BW_EFF, kernels=2)
    if op == "o_proj":
        return _gemm(gpu, t, s.q_size, h)
    if op == "mlp_gate_up":
        return _gemm(gpu, t, h, 2 * s.intermediate)
    if op == "act":
        return _roof(gpu, 0, 3 * t * s.intermediate * b, 1, ELEMENTWISE_BW_EFF)
    if op == "mlp_down":
        return _gemm(gpu, t, s.intermediate, h)
    if op == "embed":
        return _roof(gpu, 0, 2 * t * h * b, 1, ELEMENTWISE_BW_EFF)
    if op == "lm_head":
        return _gemm(gpu, t, h, s.vocab)
    if op == "sampler":  # argmax over fp32 logits, plus a few small launches
        return _roof(gpu, 0, 2 * t * s.vocab * 4, 1, ELEMENTWISE_BW_EFF, kernels=3)
    raise KeyError(op)


def roofline_attn_prefill(s: ShardedShape, gpu: GPUSpec, q: int, kv: int) -> float:
    """One request's chunk of q new tokens attending to kv keys (the chunk included), causal."""
    flops = 4.0 * s.heads * s.head_dim * q * (kv - q / 2)
    nbytes = DTYPE_BYTES * s.head_dim * (2 * q * s.heads + 2 * kv * s.kv_heads)
    return _roof(gpu, flops, nbytes, ATTN_FLOP_EFF, ATTN_BW_EFF)


def roofline_attn_decode(s: ShardedShape, gpu: GPUSpec, batch: int, ctx: int) -> float:
    """`batch` requests, one query each, over `ctx` keys each."""
    flops = 4.0 * s.heads * s.head_dim * batch * ctx
    nbytes = DTYPE_BYTES * s.head_dim * batch * (2 * ctx * s.kv_heads + 2 * s.heads)
    return _roof(gpu, flops, nbytes, ATTN_FLOP_EFF, ATTN_BW_EFF)


def all_reduce_op(s: ShardedShape, gpu: GPUSpec, t: int) -> float:
    """One all-reduce of the hidden states of t tokens over the TP group (stated bandwidth model)."""
    return all_reduce_seconds(t * s.hidden * DTYPE_BYTES, s.tp, gpu)


def cpu_step_guess(batch: int) -> float:
    """Engine host time per step before it is measured: a fixed part plus a per-request part."""
    return 60e-6 + 5e-6 * batch
