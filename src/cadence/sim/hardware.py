"""GPU SKUs and the interconnect model used until multi-GPU profiles exist.

The H100 figures are what WORKLOADS.md measured on the project's H100 (copy 3.01 TB/s counting read
and write, bf16 matmul 777 TFLOP/s), not datasheet peaks. Collectives follow the ring model: an
all-reduce of B bytes over n GPUs moves 2(n-1)/n * B through each link, plus a fixed latency per
ring step (NCCL's small-message floor).
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30


@dataclass(frozen=True)
class GPUSpec:
    name: str
    memory_bytes: int
    mem_bandwidth: float  # bytes/s actually moved (read + write) by a large copy
    matmul_flops: float  # dense bf16 FLOP/s achieved by a large matmul
    kernel_launch_s: float = 4e-6  # floor of one small kernel
    link_bandwidth: float = 360e9  # NVLink bus bandwidth per GPU seen by NCCL ring all-reduce, bytes/s
    link_latency_s: float = 8e-6  # per collective step


SKUS: dict[str, GPUSpec] = {
    "H100": GPUSpec("H100", 80 * GiB, 3.0e12, 780e12),
    # H200: same compute, 141 GB at 4.8 TB/s datasheet; scaled by the H100's measured/datasheet ratio.
    "H200": GPUSpec("H200", 141 * 10**9, 4.3e12, 780e12),
    "A100-80G": GPUSpec("A100-80G", 80 * GiB, 1.7e12, 280e12, link_bandwidth=230e9),
}


def gpu_spec(name: str) -> GPUSpec:
    try:
        return SKUS[name]
    except KeyError:
        raise ValueError(f"unknown GPU SKU {name!r}; known: {', '.join(SKUS)}") from None


def all_reduce_seconds(nbytes: float, n: int, gpu: GPUSpec) -> float:
    """Ring all-reduce of `nbytes` over `n` GPUs (0 for one GPU)."""
    if n <= 1:
        return 0.0
    steps = 2 * (n - 1)
    return steps * gpu.link_latency_s / 4 + 2 * (n - 1) / n * nbytes / gpu.link_bandwidth


def send_seconds(nbytes: float, gpu: GPUSpec) -> float:
    """Point-to-point activation transfer between pipeline stages."""
    return gpu.link_latency_s + nbytes / gpu.link_bandwidth
