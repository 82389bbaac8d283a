"""Does vattention's layers-innermost token row slow the flash decode kernel? The same decode
attention over K/V whose token rows are 1 layer wide (contiguous per layer) or all layers wide
(vattention's row: 128 KiB for llama3-8b, 16 tokens a 2 MiB page). (The H100 result file also has
rows of a split-KV decode that this script timed until it was measured slower and removed.)

    PYTHONPATH=src python benchmarks/kv_stride_attention.py --out $OUT/kv_stride.json
"""

from __future__ import annotations

import argparse
import json

import torch

from cadence.bench.results import environment
from cadence.runtime.attention.flash import flash_varlen


def time_case(batch: int, ctx: int, layers: int, iters: int = 20) -> float:
    dev, dt, H, Hq, D = torch.device("cuda"), torch.bfloat16, 8, 32, 128
    rows = torch.randn(batch * ctx, 2, layers, H, D, device=dev, dtype=dt)
    k, v = rows[:, 0, layers // 2], rows[:, 1, layers // 2]
    q = torch.randn(batch, Hq, D, device=dev, dtype=dt)
    cu_q = torch.arange(batch + 1, device=dev, dtype=torch.int32)
    cu_k = cu_q * ctx
    used = torch.full((batch,), ctx, device=dev, dtype=torch.int32)
    def call() -> torch.Tensor:
        return flash_varlen(q, k, v, cu_q, cu_k, 1, ctx, used, D ** -0.5)

    for _ in range(3):
        call()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        call()
    e.record()
    torch.cuda.synchronize()
    del rows
    torch.cuda.empty_cache()
    return s.elapsed_time(e) / iters * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for batch, ctx in ((4, 8192), (1, 16384), (256, 832), (32, 2048)):
        for layers in (1, 32):
            us = time_case(batch, ctx, layers)
            gbs = batch * ctx * 8 * 128 * 2 * 2 / us / 1e3
            rows.append({"batch": batch, "context": ctx, "row_layers": layers, "us": us,
                         "kv_read_gb_s": gbs})
            print(f"batch {batch} ctx {ctx} row of {layers} layers: {us:.0f} us ({gbs:.0f} GB/s)",
                  flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"benchmark": "kv_stride_attention", **environment(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
