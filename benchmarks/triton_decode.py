"""Decode attention on the GPU: the Triton kernel (runtime/attention/triton_decode.py) against
PyTorch's flash kernel as vattention calls it (grouped heads packed as rows, or one row a request),
over vattention's strided rows (4 layers a row), for W1-like large batches and the capacity study's
few long requests. Every variant is first checked against fp32 attention on fresh random inputs
(relative error of the max), then timed as 20 calls replayed from one CUDA graph (median of 7).

    PYTHONPATH=src python benchmarks/triton_decode.py --out $OUT/triton_decode.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics

import torch

from cadence.bench.results import environment
from cadence.models.config import NAMED_SHAPES, ModelConfig
from cadence.runtime.attention import triton_decode as td
from cadence.runtime.attention.flash import flash_decode, flash_varlen, packed_cu_q

LARGE = ((256, 858), (256, 300), (128, 1000), (64, 1000))
SMALL = ((32, 2048), (16, 4000), (8, 3000), (4, 8000), (2, 8000), (1, 16000))
CONFIGS = [dict(block_n=n, num_warps=w, num_stages=s) for n, w, s in itertools.product((32, 64, 128), (4, 8), (2, 3, 4))]


def graph_time(fn, iters: int = 20, reps: int = 7) -> float:
    """Median microseconds per call of `fn`, `iters` calls replayed from one graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        graph.replay()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / iters)
    return statistics.median(times)


def case(name: str, batch: int, mean_ctx: int, sweep: bool, seed: int) -> dict:
    mc = ModelConfig.from_dict(NAMED_SHAPES[name])
    H, Hq, D, L = mc.num_kv_heads, mc.num_heads, mc.head_dim, 4
    dev, dt = torch.device("cuda"), torch.bfloat16
    rng = random.Random(seed)
    slot = max(2048, 2 * mean_ctx)
    ctx = [max(1, min(slot, int(rng.uniform(0.2, 1.8) * mean_ctx))) for _ in range(batch)]
    g = torch.Generator(device=dev).manual_seed(seed)
    rows = torch.randn(batch * slot, 2, L, H, D, device=dev, dtype=dt, generator=g)
    k, v = rows[:, 0, 1], rows[:, 1, 1]
    q = torch.randn(batch, Hq, D, device=dev, dtype=dt, generator=g)
    order = torch.randperm(batch, device=dev, generator=g)
    cu_k = torch.cat([order * slot, torch.tensor([batch * slot], device=dev)]).to(torch.int32)
    used = torch.tensor(ctx, device=dev, dtype=torch.int32)
    scale = D ** -0.5
    want = td.reference(q, k, v, cu_k, used, scale)
    kv_bytes = sum(ctx) * H * D * 2 * 2

    def err(out: torch.Tensor) -> float:
        return ((out.float() - want).abs().max() / want.abs().max()).item()

    cu_1 = torch.arange(batch + 1, device=dev, dtype=torch.int32)
    cu_p = packed_cu_q(batch, Hq // H, dev)
    max_k = max(ctx)
    flash_fns = {"flash_rows": lambda: flash_varlen(q, k, v, cu_1, cu_k, 1, max_k, used, scale),
                 "flash_packed": lambda: flash_decode(q, k, v, cu_p, cu_k, max_k, used, scale)}
    res: dict = {"shape": name, "batch": batch, "mean_context": sum(ctx) / batch, "max_context": max_k,
                 "kv_bytes": kv_bytes, "variants": []}
    for label, fn in flash_fns.items():
        us = graph_time(fn)
        res["variants"].append({"kernel": label, "us": us, "tb_s": kv_bytes / us / 1e6, "rel_err": err(fn())})
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    configs = CONFIGS if sweep else [dict(block_n=64, num_warps=4, num_stages=3)]
    base = td.num_splits(batch, H, max_k, sms, 64)
    split_choices = sorted({1, base, max(1, base // 2), min(64, base * 2)}) if base > 1 else [1]
    for cfg, splits in itertools.product(configs, split_choices):
        def fn(cfg=cfg, splits=splits):
            return td.gqa_decode(q, k, v, cu_k, used, scale, splits=splits, **cfg)

        e = err(fn())
        us = graph_time(fn)
        res["variants"].append({"kernel": "triton", **cfg, "splits": splits, "us": us,
                                "tb_s": kv_bytes / us / 1e6, "rel_err": e})
    res["num_splits_rule"] = base
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="no config sweep")
    args = ap.parse_args()
    rows = []
    for name in ("llama3-8b", "qwen3-0.6b"):
        for i, (batch, ctx) in enumerate(LARGE + SMALL):
            r = case(name, batch, ctx, sweep=not args.quick and (batch, ctx) in LARGE[:3], seed=i)
            rows.append(r)
            best = min((x for x in r["variants"] if x["kernel"] == "triton"), key=lambda x: x["us"])
            fl = {x["kernel"]: x for x in r["variants"] if x["kernel"] != "triton"}
            worst = max(x["rel_err"] for x in r["variants"])
            print(f"{name} B={batch} ctx~{r['mean_context']:.0f}: flash rows {fl['flash_rows']['us']:.0f} us, "
                  f"packed {fl['flash_packed']['us']:.0f} us ({fl['flash_packed']['tb_s']:.2f} TB/s); triton best "
                  f"{best['us']:.0f} us ({best['tb_s']:.2f} TB/s) n{best['block_n']} w{best['num_warps']} "
                  f"s{best['num_stages']} splits {best['splits']} (rule {r['num_splits_rule']}); "
                  f"max rel err {worst:.1e}", flush=True)
            if worst > 1e-2:
                print(f"  ERROR above 1e-2: {[(x['kernel'], x.get('splits'), x['rel_err']) for x in r['variants']]}")
    result = {"benchmark": "triton_decode", "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              **environment(), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
