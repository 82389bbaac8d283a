"""Decode-step matmuls at small batch: cuBLAS (torch) against the weight-streaming Triton kernel
(runtime/skinny_gemm.py), at the shapes of qwen3-0.6b and llama3-8b.

A whole model's matmuls of one decode step (every layer's own weights, so nothing stays in L2)
are captured in one CUDA graph and replayed; the rate is weight bytes over time, set beside the
measured copy rate. Then each shape alone, with a small sweep of tile configs against the
kernel's own pick. Every Triton output is checked against torch's (bf16, relative error).

    PYTHONPATH=src python benchmarks/skinny_gemm.py --out /tmp/out/skinny_gemm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import ceilings, commit  # noqa: E402

from cadence.models.config import NAMED_SHAPES, ModelConfig  # noqa: E402
from cadence.runtime.skinny_gemm import MAX_ROWS, TileConfig, pick_config, skinny_mm  # noqa: E402


def shapes(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    return [("qkv", cfg.q_size + 2 * cfg.kv_size, cfg.hidden_size), ("o", cfg.hidden_size, cfg.q_size),
            ("gate_up", 2 * cfg.intermediate_size, cfg.hidden_size), ("down", cfg.hidden_size, cfg.intermediate_size)]


def graph_ms(fn, reps: int = 10) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        g.replay()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


def bench_model(name: str, args, sms: int, copy: float) -> tuple[dict, float]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    worst_err = 0.0
    cfg = ModelConfig.from_dict(NAMED_SHAPES[name])
    sh = shapes(cfg)
    L = cfg.num_layers
    weights = {s: [torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.02
                   for _ in range(L)] for s, n, k in sh}
    head = torch.randn(cfg.vocab_size, cfg.hidden_size, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.02
    xs = {k: torch.randn(MAX_ROWS, k, device="cuda", dtype=torch.bfloat16, generator=gen) for _, _, k in sh}
    layer_bytes = sum(n * k * 2 for _, n, k in sh)
    step_bytes = L * layer_bytes + head.numel() * 2
    m_out: dict = {"weight_bytes_per_step": step_bytes, "read_floor_ms": step_bytes / copy * 1e3,
                   "whole_step": {}, "per_shape": {}, "sweep": {}}
    for m in args.rows:
        def step(mm, m=m):
            for i in range(L):
                for s, _, k in sh:
                    mm(xs[k][:m], weights[s][i])
            mm(xs[cfg.hidden_size][:m], head)

        tc = graph_ms(lambda: step(F.linear))
        tt = graph_ms(lambda: step(lambda a, w: skinny_mm(a, w, num_sms=sms)))
        m_out["whole_step"][m] = {"cublas_ms": tc, "triton_ms": tt, "cublas_read_TBps": step_bytes / tc / 1e9,
                                  "triton_read_TBps": step_bytes / tt / 1e9}
        for s, n, k in sh + [("lm_head", cfg.vocab_size, cfg.hidden_size)]:
            ws = weights[s] if s != "lm_head" else [head]
            x = xs[k][:m]
            want = F.linear(x, ws[0]).float()
            got = skinny_mm(x, ws[0], num_sms=sms).float()
            err = ((got - want).abs().max() / want.abs().max()).item()
            worst_err = max(worst_err, err)
            c = graph_ms(lambda ws=ws, x=x: [F.linear(x, w) for w in ws])
            t = graph_ms(lambda ws=ws, x=x: [skinny_mm(x, w, num_sms=sms) for w in ws])
            b = n * k * 2 * len(ws)
            m_out["per_shape"].setdefault(s, {})[m] = {
                "cublas_us": c * 1e3 / len(ws), "triton_us": t * 1e3 / len(ws), "cublas_TBps": b / c / 1e9,
                "triton_TBps": b / t / 1e9, "pick": pick_config(m, n, k, sms).__dict__, "rel_err": err}
        print(name, m, json.dumps(m_out["whole_step"][m]), flush=True)
    t0 = time.perf_counter()
    for m in args.sweep_rows:
        for s, n, k in sh + [("lm_head", cfg.vocab_size, cfg.hidden_size)]:
            if time.perf_counter() - t0 > args.max_sweep_s:
                break
            ws = weights[s] if s != "lm_head" else [head]
            x = xs[k][:m]
            base = pick_config(m, n, k, sms)
            best = None
            for bn, bk, warps in ((64, 128, 4), (128, 128, 8), (64, 256, 4), (32, 256, 4), (128, 64, 4), (64, 64, 4)):
                for split in sorted({base.split_k, max(1, base.split_k // 2), base.split_k * 2}):
                    if k % (bk * split) or time.perf_counter() - t0 > args.max_sweep_s:
                        continue
                    for stages in (3, 5):
                        c = TileConfig(bn, bk, split, warps, stages)
                        try:
                            t = graph_ms(lambda ws=ws, x=x, c=c: [skinny_mm(x, w, c) for w in ws], reps=5)
                        except Exception as e:  # out of shared memory etc.
                            print("skip", c, type(e).__name__, flush=True)
                            continue
                        if best is None or t < best[0]:
                            best = (t, c)
            if best is not None:
                b = n * k * 2 * len(ws)
                m_out["sweep"].setdefault(s, {})[m] = {"best": best[1].__dict__, "best_TBps": b / best[0] / 1e9,
                                                      "pick_TBps": m_out["per_shape"][s][m]["triton_TBps"]
                                                      if m in m_out["per_shape"][s] else None}
                print(name, "sweep", s, m, json.dumps(m_out["sweep"][s][m]), flush=True)
    return m_out, worst_err


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["llama3-8b", "qwen3-0.6b"])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16, 32, 48, 64])
    ap.add_argument("--sweep-rows", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--max-sweep-s", type=float, default=120.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "commit": commit(),
                 "num_sms": sms, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "ceilings": ceilings(), "models": {}}
    copy = res["ceilings"]["copy_bytes_per_s"]  # as in throughput.py's floor
    worst_err = 0.0
    for name in args.models:
        res["models"][name], err = bench_model(name, args, sms, copy)
        worst_err = max(worst_err, err)
        torch.cuda.empty_cache()
    res["worst_rel_err"] = worst_err
    print("worst relative error", worst_err)
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if worst_err < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
