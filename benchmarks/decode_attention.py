"""Decode attention on the H100: PyTorch's flash varlen kernel called per query head (one query row
a request, causal) against the same kernel with grouped query heads packed as rows (flash_decode),
over vattention's strided layout (each layer a view with a row stride of all layers' K and V).
Each is timed with max_seqlen_k the batch's longest context and with the fixed bound a CUDA graph
captures (`--graph-max-k`, the engine's max_ctx), over large batches of W1-like contexts and small
batches of long ones (the capacity study's decode steps).

    PYTHONPATH=src python benchmarks/decode_attention.py --out $OUT/decode_attention.json
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from cadence.bench.results import environment
from cadence.models.config import NAMED_SHAPES, ModelConfig
from cadence.runtime.attention.flash import flash_decode, flash_varlen, packed_cu_q


def run_shape(name: str, batch: int, mean_ctx: int, slot: int, iters: int, graph_max_k: int = 17408) -> dict:
    mc = ModelConfig.from_dict(NAMED_SHAPES[name])
    H, Hq, D, L = mc.num_kv_heads, mc.num_heads, mc.head_dim, 4  # 4 layers in the row: the stride matters
    dev, dt = torch.device("cuda"), torch.bfloat16
    rng = random.Random(0)
    ctx = [max(1, min(slot, int(rng.uniform(0.2, 1.8) * mean_ctx))) for _ in range(batch)]
    rows = torch.randn(batch * slot, 2, L, H, D, device=dev, dtype=dt)
    k, v = rows[:, 0, 1], rows[:, 1, 1]  # layer 1 of every token row
    q = torch.randn(batch, Hq, D, device=dev, dtype=dt)
    cu_k = torch.arange(batch + 1, device=dev, dtype=torch.int32) * slot
    used = torch.tensor(ctx, device=dev, dtype=torch.int32)
    cu_1 = torch.arange(batch + 1, device=dev, dtype=torch.int32)
    cu_p = packed_cu_q(batch, Hq // H, dev)
    scale = D ** -0.5

    max_k = max(ctx)

    def plain() -> torch.Tensor:
        return flash_varlen(q, k, v, cu_1, cu_k, 1, max_k, used, scale)

    def packed() -> torch.Tensor:
        return flash_decode(q, k, v, cu_p, cu_k, max_k, used, scale)

    a, b = plain().float(), packed().float()
    rel = ((a - b).abs().max() / a.abs().max()).item()

    def time_it(fn) -> float:
        for _ in range(3):
            fn()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(5):
            s.record()
            for _ in range(iters):
                fn()
            e.record()
            torch.cuda.synchronize()
            best = min(best, s.elapsed_time(e) / iters * 1e3)
        return best

    t_plain, t_packed = time_it(plain), time_it(packed)
    max_k = graph_max_k  # what a captured graph passes: the same kernels, a fixed bound
    g_plain, g_packed = time_it(plain), time_it(packed)
    kv_bytes = sum(ctx) * H * D * 2 * 2
    return {"shape": name, "batch": batch, "mean_context": sum(ctx) / batch, "max_context": max(ctx),
            "query_heads": Hq, "kv_heads": H,
            "max_rel_err_packed_vs_plain": rel, "plain_us": t_plain, "packed_us": t_packed,
            "speedup": t_plain / t_packed, "kv_read_tb_s_plain": kv_bytes / t_plain / 1e6,
            "kv_read_tb_s_packed": kv_bytes / t_packed / 1e6, "graph_max_k": graph_max_k,
            "plain_us_graph_max_k": g_plain, "packed_us_graph_max_k": g_packed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--graph-max-k", type=int, default=17408, help="max_seqlen_k a captured graph passes")
    ap.add_argument("--crossover", action="store_true",
                    help="instead: batches 16-128 x contexts 1k-8k, where packing starts to pay (PACKED_MIN_TILES)")
    args = ap.parse_args()
    rows = []
    points = ((256, 858), (64, 858), (256, 300), (32, 1600), (34, 1100), (1, 16000), (2, 8000), (4, 6000), (8, 3000))
    if args.crossover:
        points = tuple((b, c) for b in (16, 24, 32, 48, 64, 96, 128) for c in (1000, 2000, 4000, 8000))
    for name in ("qwen3-0.6b", "llama3-8b"):
        for batch, ctx in points:
            r = run_shape(name, batch, ctx, max(2048, 2 * ctx), args.iters, args.graph_max_k)
            rows.append(r)
            print(f"{name} batch {batch} ctx {r['mean_context']:.0f} (max {r['max_context']}): plain "
                  f"{r['plain_us']:.0f} us ({r['kv_read_tb_s_plain']:.2f} TB/s), packed {r['packed_us']:.0f} us "
                  f"({r['kv_read_tb_s_packed']:.2f} TB/s), x{r['speedup']:.2f}; max_k {args.graph_max_k}: plain "
                  f"{r['plain_us_graph_max_k']:.0f} us, packed {r['packed_us_graph_max_k']:.0f} us; "
                  f"rel err {r['max_rel_err_packed_vs_plain']:.1e}", flush=True)
    result = {"benchmark": "decode_attention", **environment(), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
